; Inno Setup 6 script: installs the PyInstaller bundle (dist\gmi-desktop\) and registers
; "Find best model" on the context menu of PNG, JPEG and WebP images.
;   iscc packaging\windows\gmi-desktop.iss      (after: pyinstaller packaging\pyinstaller\gmi-desktop.spec)
; Per user by default (no admin rights; HKA = HKCU), or for all users when run elevated
; (HKA = HKLM). The uninstaller removes the bundle and exactly the keys below (uninsdeletekey).
; The keys match gmi_desktop/integrations/windows.py, which `gmi-desktop integrate install`
; writes for a pip install (tests/test_integrations_packaging.py checks they agree).
; Windows 11 lists the verb under "Show more options" (Shift+F10), as for every classic verb.

#define AppVersion "0.1.0"
#define VerbKey "Software\Classes\SystemFileAssociations\image\shell\GMIDesktop.FindBestModel"

[Setup]
AppId={{8E3C0B6F-5A4B-4C8E-9C51-2F0D6B7A9E11}
AppName=GMI Desktop
AppVersion={#AppVersion}
AppPublisher=GMI Desktop contributors
DefaultDirName={autopf}\GMI Desktop
DefaultGroupName=GMI Desktop
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=gmi-desktop-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
; the CUDA build of torch makes the bundle several GB: spanning lifts Inno's 2 GB single-file limit
DiskSpanning=yes
DiskSliceSize=max
UninstallDisplayIcon={app}\GMI Desktop.exe
ChangesAssociations=yes

[Files]
Source: "..\..\dist\gmi-desktop\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\GMI Desktop"; Filename: "{app}\GMI Desktop.exe"

[Registry]
Root: HKA; Subkey: "{#VerbKey}"; ValueType: string; ValueName: "MUIVerb"; ValueData: "Find best model"; Flags: uninsdeletekey
Root: HKA; Subkey: "{#VerbKey}"; ValueType: string; ValueName: "Icon"; ValueData: "{app}\GMI Desktop.exe,0"
Root: HKA; Subkey: "{#VerbKey}"; ValueType: string; ValueName: "AppliesTo"; ValueData: "System.FileExtension:=.png OR System.FileExtension:=.jpg OR System.FileExtension:=.jpeg OR System.FileExtension:=.webp"
Root: HKA; Subkey: "{#VerbKey}"; ValueType: string; ValueName: "MultiSelectModel"; ValueData: "Player"
Root: HKA; Subkey: "{#VerbKey}"; ValueType: string; ValueName: "GMIDesktopManaged"; ValueData: "gmi-desktop-managed"
Root: HKA; Subkey: "{#VerbKey}\command"; ValueType: string; ValueName: ""; ValueData: """{code:PercentEscapedApp}\GMI Desktop.exe"" ""open"" ""%1"""; Flags: uninsdeletekey

[Code]
{ Explorer expands %1 and %VARIABLE% in the command: a % in the install folder is written %%. }
function PercentEscapedApp(Param: String): String;
begin
  Result := ExpandConstant('{app}');
  StringChangeEx(Result, '%', '%%', True);
end;
