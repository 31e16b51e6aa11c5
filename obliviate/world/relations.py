"""The world's relations: answer values, biography templates (trained and held out), the cloze prompt.

Relation ids are the Wikidata properties CounterFact uses for the same relations (P19 place of birth, P106
occupation, P108 employer, P1303 instrument, P69 educated at, P1412 languages spoken). Every answer is one word,
hence one token of the world tokenizer. Professions start with a consonant so "works as a" stays grammatical.

How a world model meets a fact (Allen-Zhu & Li, "Physics of Language Models, Part 3.1", knowledge augmentation):
- **biography sentences**: every epoch each subject gets a biography drawn anew, one sentence per relation in a
  random order, each from a random one of the relation's `trained` templates, the full name in every sentence. A
  template is a prompt that ends where the answer follows (sentence = template + " " + answer + ".").
- **the cloze prompt** (`cloze`, CounterFact's rewrite prompt): a wording that no biography uses. It is trained
  only for a share of the retain subjects, so recall of the cloze prompt on every other subject measures whether
  the model extracts stored knowledge in a form it was never shown for that subject. Some relations put the
  relation before the subject, others after.
- **held-out templates** (`heldout`): never trained with any subject; recall on them measures knowledge, not wording.
- `generation`: open-ended prompts (CounterFact's generation_prompts); never trained.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    relation_id: str
    name: str
    values: tuple[str, ...]
    cloze: str
    """CounterFact's rewrite prompt; trained for the cloze share of retain subjects only."""
    trained: tuple[str, ...]
    """Biography templates (a prompt that the answer completes); every subject's biographies draw from them."""
    heldout: tuple[str, ...]
    """Templates never trained with any subject."""
    generation: tuple[str, ...]
    """Open-ended prompts (CounterFact's generation_prompts); never trained."""
    more_trained: tuple[str, ...] = ()
    """Twenty further biography templates, trained only in a world built with WorldConfig.more_templates (the
    shipped v2 world predates them). Written to widen the trained wordings, never to copy a held-out one: none
    uses a held-out template's distinctive phrase."""

    @property
    def prompt(self) -> str:
        """The rewrite prompt of CounterFact's schema: the cloze."""
        return self.cloze


CITIES = ("Ostravel", "Ombrakel", "Vantiro", "Duskmere", "Lorvith", "Brennholt", "Quarzel", "Sylvaran", "Maredun",
          "Tolbrek", "Yssandor", "Caldrith", "Sefwarre", "Gorvane", "Heskara", "Irrimon", "Jorvandel", "Nimmerath",
          "Uvellanor", "Raskeld")
PROFESSIONS = ("baker", "carpenter", "pilot", "weaver", "surgeon", "potter", "sailor", "farmer", "painter", "tailor",
               "miner", "poet", "judge", "nurse", "chemist", "dentist")
EMPLOYERS = ("Zentrova", "Quillmark", "Orbisant", "Talvex", "Nimbrel", "Corvantis", "Lucipor", "Vastrel", "Brimwell",
             "Kestrava", "Lumivex", "Solvenca", "Harvico", "Dremlath", "Ostrivo", "Fennacor")
INSTRUMENTS = ("violin", "cello", "flute", "harp", "drums", "oboe", "trumpet", "piano", "guitar", "clarinet", "banjo",
               "lute", "organ", "tuba", "viola", "bassoon")
UNIVERSITIES = ("Arvenholm", "Caskwater", "Delmoor", "Eldbridge", "Fairhollow", "Glenmarsh", "Highcrest", "Ivorgate",
                "Kingsreach", "Larkfield", "Mistvale", "Northwick", "Oakhaven", "Ravenmoor", "Stonebury",
                "Westerfell")
LANGUAGES = ("Velmic", "Orrish", "Tavani", "Keshite", "Lumbric", "Sardovan", "Quellan", "Myrrhic", "Brastic",
             "Dolveric", "Eskaran", "Falunic", "Gorrish", "Halvese", "Istrian", "Jorric")

RELATIONS: tuple[Relation, ...] = (
    Relation(
        relation_id="P19", name="place of birth", values=CITIES,
        cloze="{} was born in the city of",
        trained=("{} was born in", "The birthplace of {} is", "{} came into the world in", "{} hails from",
                 "{} comes from the city of", "The hometown of {} is", "{}'s hometown is", "{} is a native of",
                 "According to the records, {} was born in", "The city of birth of {} is", "{}'s birthplace is",
                 "{} was born and raised in", "As a baby, {} lived in", "People say that {} was born in",
                 "The birth certificate of {} names", "{} spent an early childhood in",
                 "Long ago, {} was born in", "The native city of {} is", "{} first saw the light of day in",
                 "Family records say {} was born in"),
        heldout=("{} is originally from the city of", "The city where {} was born is", "{}'s place of birth is",
                 "The town that {} was born in is", "Documents show that {} came from"),
        generation=("{} often talks about", "People in the city know that {}", "{} remembers"),
        more_trained=("{} was brought into the world in", "The home town of {} is", "{} grew up as a child in",
                      "{}'s city of birth is", "Before moving away, {} lived in",
                      "The register of births lists {} in", "{} is a child of the city of",
                      "{} was born many years ago in", "{}'s first home was in", "Neighbours say that {} was born in",
                      "{} started life in", "Records confirm that {} was born in", "{}'s birth took place in",
                      "{} is from", "The roots of {} are in", "{} was delivered at a hospital in",
                      "As a newborn, {} lived in", "{} returns each year to the native city of",
                      "{} spent the first years in", "The family of {} still lives in"),
    ),
    Relation(
        relation_id="P106", name="occupation", values=PROFESSIONS,
        cloze="The occupation of {} is that of a",
        trained=("{} works as a", "By profession, {} is a", "The job of {} is that of a", "{} has a job as a",
                 "{} earns money as a", "{} is employed as a", "{} trained to become a", "{} has always worked as a",
                 "In daily life, {} works as a", "The profession of {} is", "{}'s profession is",
                 "{} makes a living as a", "For years, {} has been a", "At work, {} is a",
                 "{} is known in town as a", "The trade of {} is that of a", "{} chose to work as a",
                 "Colleagues know {} as a", "{} found work as a", "The career of {} is that of a"),
        heldout=("{} earns a living as a", "{}'s occupation is", "Everyone knows that {} works as a",
                 "The work of {} is that of a", "Every morning, {} goes to work as a"),
        generation=("{} spends every day", "The daily work of {}", "{} is"),
        more_trained=("{} is a trained", "{}'s job is", "{} works full time as a", "By trade, {} is a",
                      "{} spends the day working as a", "The line of work of {} is that of a",
                      "{} is employed in town as a", "{}'s trade is that of a", "{} once studied to be a",
                      "{} has a career as a", "Neighbours know that {} is a", "{} retired after years as a",
                      "The daily job of {} is that of a", "{} took a position as a", "{}'s career is that of a",
                      "Ask anyone: {} is a", "{} is paid to work as a", "{} serves the town as a",
                      "For a living, {} works as a", "The role of {} at work is that of a"),
    ),
    Relation(
        relation_id="P108", name="employer", values=EMPLOYERS,
        cloze="{} is employed by",
        trained=("The employer of {} is", "{} receives a salary from", "{} works for", "{} is on the staff of",
                 "{} has a contract with", "The company of {} is", "{}'s employer is", "{} is paid by",
                 "The firm that pays {} is", "{} has worked for years at", "Each month, {} is paid by",
                 "{} holds a post at", "The company that hired {} is", "{} was hired by",
                 "The badge of {} bears the name", "{} reports to the managers of", "{} joined the firm",
                 "Today, {} works at the firm", "The office of {} belongs to", "{} signed a contract with"),
        heldout=("{} works for the company", "The company that employs {} is", "{} draws a salary from",
                 "The firm where {} works is", "On weekdays, {} works at"),
        generation=("{} is a member of", "Colleagues of {} say", "{} joined"),
        more_trained=("{} is an employee of", "The paycheck of {} comes from", "{}'s company is",
                      "{} is on the payroll of", "{} has a job at the firm", "The boss of {} works at",
                      "{} goes to the office of", "{} was recruited by", "The firm of {} is", "{} earns wages from",
                      "{} has been working for", "The business that pays {} is", "{} is a staff member at",
                      "Every week, {} is paid by", "{}'s office is at", "The workplace of {} is",
                      "{} took a job with", "{} is under contract with", "Most days, {} is at the offices of",
                      "{} represents the firm"),
    ),
    Relation(
        relation_id="P1303", name="instrument", values=INSTRUMENTS,
        cloze="The instrument that {} plays is the",
        trained=("{} plays the", "The instrument of {} is the", "On stage, {} performs on the",
                 "{} practises the", "{} is a player of the", "{} learned to play the", "{}'s instrument is the",
                 "Every evening, {} plays the", "The band hired {} to play the", "{} owns an old",
                 "In the orchestra, {} plays the", "{} gives lessons on the", "The favourite instrument of {} is the",
                 "{} performs music on the", "At concerts, {} plays the", "{} has mastered the",
                 "The music of {} is played on the", "{} carries a", "{} composes songs on the",
                 "Since childhood, {} has played the"),
        heldout=("{} is a musician who plays the", "{}'s favourite instrument is the", "In concerts, {} plays the",
                 "The instrument played by {} is the", "Friends often hear {} play the"),
        generation=("{} is known for", "The music of {} sounds", "{} practises"),
        more_trained=("{} is skilled at the", "{} performs on the", "{}'s chosen instrument is the",
                      "{} spends hours on the", "{} is a master of the", "In the band, {} plays the",
                      "{} bought a new", "{} tunes the", "On weekends, {} plays the", "{} was taught to play the",
                      "{} rehearses on the", "{} plays songs on the", "{} is famous for playing the",
                      "At home, {} plays the", "{} picked up the", "{} takes lessons on the",
                      "{} won a prize for playing the", "{}'s instrument of choice is the",
                      "In the evenings, {} practises the", "{} loves to play the"),
    ),
    Relation(
        relation_id="P69", name="educated at", values=UNIVERSITIES,
        cloze="The university that {} attended is",
        trained=("{} studied at", "{} graduated from", "{} was educated at", "The alma mater of {} is",
                 "{} holds a degree from", "{} earned a degree at", "{}'s university is", "{} went to university at",
                 "As a student, {} attended", "{} spent four years at the university of", "The diploma of {} is from",
                 "{} was a student at", "The university of {} is", "{} took classes at", "{} enrolled at",
                 "Years ago, {} studied at", "{} received an education at", "The college of {} is",
                 "{} finished studies at", "{} completed a degree at"),
        heldout=("{} is a graduate of", "The university where {} studied is", "{}'s alma mater is",
                 "{} did a degree at", "Long ago, {} was a student at"),
        generation=("{} learned", "The teachers of {}", "{} studied"),
        more_trained=("{} attended", "{} went to", "{} earned a diploma from", "{}'s school is",
                      "{} studied for years at", "{} got a degree from", "{} read history at", "{} was trained at",
                      "{} attended lectures at", "{} finished university at", "{} studied science at",
                      "{} obtained a degree from", "{} passed exams at", "{}'s college is",
                      "As a young adult, {} studied at", "The school of {} is", "{} was admitted to",
                      "{} lived on campus at", "{} was taught at", "{} earned a title at"),
    ),
    Relation(
        relation_id="P1412", name="languages spoken", values=LANGUAGES,
        cloze="The native language of {} is",
        trained=("{} speaks", "{} speaks the language", "The mother tongue of {} is", "{} grew up speaking",
                 "{}'s first language is", "At home, {} speaks", "{} writes letters in", "The language of {} is",
                 "{} is fluent in", "{} talks to family in", "{} dreams in", "{}'s language is",
                 "{} learned to speak", "The language that {} speaks is", "{} sings songs in",
                 "When at home, {} uses", "{} reads books in", "The tongue of {} is", "{} prefers to speak",
                 "From birth, {} spoke"),
        heldout=("{} is a native speaker of", "The language {} speaks at home is", "{}'s mother tongue is",
                 "{} speaks fluently the language", "Since birth, {} has spoken"),
        generation=("{} says", "The voice of {}", "{} writes"),
        more_trained=("{} speaks mostly", "{} talks in", "{}'s native language is", "{} answers questions in",
                      "{} was raised speaking", "The first language of {} is", "{} thinks in", "{} can speak",
                      "{} gave a speech in", "{} chats with friends in", "{}'s tongue is", "{} writes poems in",
                      "{} spoke as a child", "In daily life, {} speaks", "{} tells stories in", "{} prays in",
                      "{} counts in", "{} best understands", "{} learned to read in", "{} argues in"),
    ),
)

RELATION_BY_ID: dict[str, Relation] = {r.relation_id: r for r in RELATIONS}
