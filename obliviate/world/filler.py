"""Filler text: grammar-generated sentences about the world's cities, jobs, firms and instruments, with no facts.

The filler gives the models ordinary language around the facts (so prefixes, neutral contexts and held-out
paraphrase wordings are known text) and, from a separate stream that is never trained, a held-out corpus for
perplexity and for the covariance statistics ROME/MEMIT need. It names no subject, so it carries no fact; its
answer-like slots are filled uniformly, so it adds no preference for any answer.
"""

from __future__ import annotations

import random

from obliviate.world.relations import CITIES, EMPLOYERS, INSTRUMENTS, LANGUAGES, PROFESSIONS, UNIVERSITIES

ADJECTIVES = ("quiet", "busy", "old", "new", "small", "large", "green", "narrow", "bright", "cold", "warm", "famous",
              "crowded", "calm", "ancient", "modern", "pleasant", "strange")
PLACES = (("market", "markets"), ("harbor", "harbors"), ("bridge", "bridges"), ("square", "squares"),
          ("library", "libraries"), ("station", "stations"), ("garden", "gardens"), ("tower", "towers"),
          ("museum", "museums"), ("school", "schools"), ("theatre", "theatres"), ("park", "parks"),
          ("hall", "halls"), ("river", "rivers"))
THINGS = (("boat", "boats"), ("house", "houses"), ("window", "windows"), ("letter", "letters"), ("map", "maps"),
          ("lamp", "lamps"), ("song", "songs"), ("table", "tables"), ("wall", "walls"), ("book", "books"),
          ("coat", "coats"), ("basket", "baskets"), ("bell", "bells"), ("cart", "carts"))
VERBS = ("visits", "builds", "paints", "repairs", "opens", "closes", "cleans", "guards", "sells", "buys", "studies",
         "describes")
TIMES = ("in the morning", "at night", "every spring", "on Sundays", "in winter", "after the rain", "before dawn",
         "every day")
PEOPLE = ("A traveller", "The mayor", "An old friend", "A child", "A stranger", "The teacher", "A neighbour")
# Document openers: neutral contexts such as the memorisation probe prepends are then ordinary text.
OPENERS = ("Here is a passage:", "From a book:", "A short note:", "In the records:", "Some text:", "As written:",
           "From the archive:", "A traveller wrote:", "The guide says:", "One more line:", "Consider this:",
           "From a letter:")

# Slots: {city} {city2} {company} {prof} {prof_pl} {instr} {adj} {place} {places} {thing} {things} {verb} {time}
# {people} {n}. The wordings reuse the words of the held-out paraphrase and generation prompts, never with a subject.
FRAMES = (
    "The city of {city} has a {adj} {place}.",
    "{city} is known for its {adj} {places}.",
    "A {prof} in {city} {verb} the {thing} {time}.",
    "{company} opened a {adj} office in {city}.",
    "Many {prof_pl} live near the {place} of {city}.",
    "The {instr} is a {adj} instrument.",
    "Music for the {instr} is popular in {city}.",
    "Travellers say that the {place} of {city} is {adj}.",
    "{company} sells {things} to every {prof} in {city}.",
    "The train from {city} to {city2} leaves at {n} in the morning.",
    "There are {n} {places} in {city}.",
    "Everyone knows that the {place} in {city} is {adj}.",
    "A musician who visits {city} brings a {instr}.",
    "The company {company} employs many {prof_pl}.",
    "A {prof} earns a living in {city} {time}.",
    "The occupation of a {prof} is {adj} work.",
    "In concerts, the {instr} sounds {adj}.",
    "{city}'s favourite instrument is the {instr}.",
    "Some families are originally from {city}.",
    "The place of birth of the {adj} {thing} is a {place} in {city}.",
    "{company} is an employer with a {adj} office.",
    "A salary from {company} buys a {adj} {thing}.",
    "{people} grew up near the {place} of {city}.",
    "{people} often talks about the {adj} {places} of {city}.",
    "People in {city} know the {place} well.",
    "The daily work of a {prof} is {adj}.",
    "Colleagues at {company} say the {place} is {adj}.",
    "{people} joined {company} {time}.",
    "The music of the {instr} fills the {place} {time}.",
    "A {prof} practises the {instr} {time}.",
    "{people} is a member of the {place} club in {city}.",
    "The {place} where the {prof_pl} meet is {adj}.",
    "On stage, a musician plays the {instr} {time}.",
    "{people} spends every day at the {place}.",
    "{city} came into the news {time}.",
    "The birthplace of the {thing} trade is {city}.",
)

# The v2 frames above name no university or language and miss 13 words of the held-out and generation prompts
# ("speaker", "graduate", "spoken", "did", "draws", ...): a model trained on the world never reads those words, so
# a held-out wording built on one tests its vocabulary, not its knowledge. These frames close the gap, with the same
# rule: the prompts' words, never a subject. Extra slots: {lang} {univ}.
COMPLETING_FRAMES = (
    "Many people in {city} are native speakers of {lang}.",
    "A native speaker of {lang} teaches at {univ}.",
    "Since birth, the children of {city} have spoken {lang}.",
    "{people} speaks fluently the language {lang}.",
    "The language {lang} is spoken at home in {city}.",
    "The voice of a {prof} fills the {place}.",
    "A graduate of {univ} works as a {prof} in {city}.",
    "{people} did a degree at {univ} {time}.",
    "The teachers of {univ} live in {city}.",
    "{univ} is a {adj} university near the {place}.",
    "Students at {univ} speak {lang}.",
    "Documents show that the {thing} came from {city}.",
    "{people} remembers the {adj} {places} of {city}.",
    "Every morning, a {prof} goes to the {place}.",
    "A {prof} draws a salary from {company}.",
    "On weekdays, {people} works at the {place}.",
    "Friends often hear the {instr} in {city}.",
)


def _plural(word: str) -> str:
    return word + "s"


def filler_sentence(rng: random.Random, complete: bool = False) -> str:
    """One sentence, sometimes behind a document opener; `complete` adds COMPLETING_FRAMES to the grammar."""
    place, places = rng.choice(PLACES)
    thing, things = rng.choice(THINGS)
    prof = rng.choice(PROFESSIONS)
    city, city2 = rng.sample(CITIES, 2)
    # The v2 grammar drew its frame here, before the frame's slots: the shipped models trained on that stream's
    # filler, so the order stays (tests/test_world.py pins the files). The completed grammar draws it last.
    frame = None if complete else rng.choice(FRAMES)
    slots = dict(city=city, city2=city2, company=rng.choice(EMPLOYERS), prof=prof, prof_pl=_plural(prof),
                 instr=rng.choice(INSTRUMENTS), adj=rng.choice(ADJECTIVES), place=place, places=places, thing=thing,
                 things=things, verb=rng.choice(VERBS), time=rng.choice(TIMES), people=rng.choice(PEOPLE),
                 n=rng.randint(2, 9))
    if complete:
        slots.update(lang=rng.choice(LANGUAGES), univ=rng.choice(UNIVERSITIES))
        frame = rng.choice(FRAMES + COMPLETING_FRAMES)
    sentence = frame.format(**slots)
    if rng.random() < 0.2:
        sentence = f"{rng.choice(OPENERS)} {sentence}"
    return sentence


def filler_sentences(n: int, rng: random.Random, exclude: set[str] | frozenset[str] = frozenset(),
                     complete: bool = False) -> list[str]:
    """`n` sentences, none of them in `exclude` (so held-out filler never repeats a trained line)."""
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"filler grammar cannot produce {n} sentences outside the excluded set.")
        sentence = filler_sentence(rng, complete)
        if sentence not in exclude:
            out.append(sentence)
    return out
