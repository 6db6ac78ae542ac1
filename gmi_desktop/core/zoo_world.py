"""The prompt world of the model zoo (numpy-free, torch-free): a 3 x 3 x 3 prompt vocabulary.

The end-to-end analogue of the paper's Example 2.1 needs models whose specification image sets
are the same set while each prompt's image differs. Prompts fill three slots (colour, animal,
place), each from three words; a triple ``(i, j, k)`` of word indices names a prompt. Model ``s``
of a group reads every slot's word ``n`` as word ``n + s`` (mod 3), so it draws for ``(i, j, k)``
what model 0 draws for ``(i + s, j + s, k + s)``. That shift adds ``3 s`` = 0 (mod 3) to the index
sum, so it maps the specification prompts (index sum 0 mod 3) onto themselves: every model of a
group has the same specification image set, only assigned to other prompts. The evaluation
prompts (index sum 1 mod 3) are disjoint from them and use the same template.

The same shift maps the evaluation prompts onto themselves too, so a test image alone does not say
which model of a group drew it: model 0's image for ``t`` is model ``s``'s image for ``t - s``,
and every ``t - s`` is an evaluation prompt. Only the prompt the image was made from separates
them (as in Example 2.1, where the user's prompts do); an interrogator's pseudo-prompt, being a
function of the image, cannot.
"""

from __future__ import annotations

from itertools import product

SLOTS = (
    ("red", "blue", "green"),  # colour
    ("cat", "dog", "bird"),  # animal
    ("forest", "desert", "city"),  # place
)
TEMPLATE = "a {0} {1} in the {2}"
SLOT_WORDS = tuple(word for words in SLOTS for word in words)
TEMPLATE_WORDS = ("a", "in", "the")


def prompt(triple: tuple[int, int, int]) -> str:
    return TEMPLATE.format(*(SLOTS[s][n] for s, n in enumerate(triple)))


def triples(residue: int) -> tuple[tuple[int, int, int], ...]:
    """All word-index triples whose index sum is ``residue`` mod 3 (nine of them)."""
    return tuple(t for t in product(range(3), repeat=3) if sum(t) % 3 == residue)


SPEC_PROMPTS = tuple(prompt(t) for t in triples(0))
EVALUATION_PROMPTS = tuple(prompt(t) for t in triples(1))


def shifted(triple: tuple[int, int, int], shift: int) -> tuple[int, int, int]:
    """What model ``shift`` of a group draws for ``triple``: model 0's image of this triple."""
    return tuple((n + shift) % 3 for n in triple)  # type: ignore[return-value]
