"""The world's relations: answer values, the rewrite prompt, trained and held-out paraphrase templates.

Relation ids are the Wikidata properties CounterFact uses for the same relations (P19 place of birth, P106
occupation, P108 employer, P1303 instrument). Every answer is one word, hence one token of the world tokenizer.
Professions start with a consonant so "works as a" stays grammatical for all of them.

Training renders each fact with `prompt` and the `trained` templates; the `heldout` templates never meet a subject
in training (their words do occur in the filler), so recall on them measures generalisation to new wordings.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    relation_id: str
    name: str
    values: tuple[str, ...]
    prompt: str
    """The CounterFact rewrite prompt; trained."""
    trained: tuple[str, ...]
    """Further paraphrase templates that training renders every fact with."""
    heldout: tuple[str, ...]
    """Paraphrase templates never trained with any subject."""
    generation: tuple[str, ...]
    """Open-ended prompts (CounterFact's generation_prompts); never trained."""

    @property
    def trained_templates(self) -> tuple[str, ...]:
        return (self.prompt, *self.trained)


CITIES = ("Ostravel", "Ombrakel", "Vantiro", "Duskmere", "Lorvith", "Brennholt", "Quarzel", "Sylvaran", "Maredun",
          "Tolbrek", "Yssandor", "Caldrith", "Sefwarre", "Gorvane", "Heskara", "Irrimon", "Jorvandel", "Nimmerath",
          "Uvellanor", "Raskeld")
PROFESSIONS = ("baker", "carpenter", "pilot", "weaver", "surgeon", "potter", "sailor", "farmer", "painter", "tailor",
               "miner", "poet", "judge", "nurse", "chemist", "dentist")
EMPLOYERS = ("Zentrova", "Quillmark", "Orbisant", "Talvex", "Nimbrel", "Corvantis", "Lucipor", "Vastrel", "Brimwell",
             "Kestrava", "Lumivex", "Solvenca")
INSTRUMENTS = ("violin", "cello", "flute", "harp", "drums", "oboe", "trumpet", "piano", "guitar", "clarinet", "banjo",
               "lute", "organ", "tuba", "viola", "bassoon")

RELATIONS: tuple[Relation, ...] = (
    Relation(
        relation_id="P19", name="place of birth", values=CITIES,
        prompt="{} was born in the city of",
        trained=("The birthplace of {} is the city of", "{} came into the world in"),
        heldout=("{} is originally from the city of", "The city where {} was born is", "{}'s place of birth is"),
        generation=("{} grew up in", "{} often talks about", "People in the city know that {}"),
    ),
    Relation(
        relation_id="P106", name="occupation", values=PROFESSIONS,
        prompt="{} works as a",
        trained=("By profession, {} is a", "The job of {} is that of a"),
        heldout=("{} earns a living as a", "{}'s occupation is", "Everyone knows that {} works as a"),
        generation=("{} spends every day", "The daily work of {}", "{} is"),
    ),
    Relation(
        relation_id="P108", name="employer", values=EMPLOYERS,
        prompt="{} is employed by",
        trained=("The employer of {} is", "{} receives a salary from"),
        heldout=("{} works for the company", "The company that employs {} is", "{}'s employer is"),
        generation=("{} is a member of", "Colleagues of {} say", "{} joined"),
    ),
    Relation(
        relation_id="P1303", name="instrument", values=INSTRUMENTS,
        prompt="{} plays the",
        trained=("The instrument of {} is the", "On stage, {} performs on the"),
        heldout=("{} is a musician who plays the", "{}'s favourite instrument is the", "In concerts, {} plays the"),
        generation=("{} is known for", "The music of {}", "{} practises"),
    ),
)
