"""Candidate facts for the *untuned* SmolLM2 fact set: written after ROME's settings were frozen on the shipped set.

`bench/bench_edit.py rome-sweep` chose ROME's layer and settings on ``smollm2_facts.jsonl``; this second set checks
them on facts nobody tuned on. Its relations and subjects are disjoint from the shipped set's (dishes, moons,
athletes, composers' works, landforms, currencies, scientists' fields); only the currency relation's subjects
(countries) are among the places the place-mentions corpus names (`edit.covariance`), so the rest say whether
estimating C with place names helps subjects that are not places. Written by hand from general
knowledge (well-known, stable facts only); ``make_smollm2_facts.py --set untuned`` keeps those the model knows.
Conventions as ``smollm2_sources.py`` ("the X" takes the article in prompts; answers never start with "the").
"""

from __future__ import annotations

from obliviate.data.smollm2_sources import Relation

RELATIONS: dict[str, Relation] = {
    r.relation_id: r
    for r in (
        Relation(
            "P495", "dish-country",
            "{} is a traditional dish from the country of",
            ("The dish called {} comes from the country of", "{} was first made in the country of"),
            ("{} is usually served with", "To cook {}, you need"),
        ),
        Relation(
            "P397", "moon-planet",
            "{} is a moon of",
            ("{} orbits the planet", "{} is a natural satellite of the planet"),
            ("The surface of {} is", "Scientists who study {}"),
        ),
        Relation(
            "P641", "athlete-sport",
            "{} is famous for playing the sport of",
            ("{} is a professional player of", "The sport that {} plays is"),
            ("{} became famous when", "Fans of {} remember"),
        ),
        Relation(
            "P86", "composer",
            "{} is a famous piece of music by",
            ("The composer of {} is", "{} was composed by"),
            ("{} begins with", "Listeners of {} often"),
        ),
        Relation(
            "P17G", "landform-country",
            "{} is located in the country of",
            ("{} can be found in the country of", "Tourists who want to see {} travel to the country of"),
            ("{} is one of the most", "The landscape around {}"),
        ),
        Relation(
            "P38", "currency",
            "The official currency of {} is the",
            ("In {}, people pay with the", "The money used in {} is called the"),
            ("Prices in {} are", "Banks in {}"),
        ),
        Relation(
            "P101", "scientist-field",
            "{} is best known for work in the field of",
            ("{} was a scientist who worked in", "The field of science that {} changed is"),
            ("{} was born in a family that", "The early life of {}"),
        ),
    )
}

DISHES: tuple[tuple[str, str], ...] = (
    ("sushi", "Japan"), ("ramen", "Japan"), ("tempura", "Japan"), ("miso soup", "Japan"),
    ("pizza", "Italy"), ("lasagna", "Italy"), ("risotto", "Italy"), ("tiramisu", "Italy"), ("spaghetti", "Italy"),
    ("paella", "Spain"), ("gazpacho", "Spain"), ("churros", "Spain"),
    ("tacos", "Mexico"), ("enchiladas", "Mexico"), ("guacamole", "Mexico"), ("burritos", "Mexico"),
    ("kimchi", "Korea"), ("bibimbap", "Korea"), ("bulgogi", "Korea"),
    ("croissants", "France"), ("ratatouille", "France"), ("crêpes", "France"), ("bouillabaisse", "France"),
    ("pad thai", "Thailand"), ("tom yum", "Thailand"), ("pho", "Vietnam"),
    ("goulash", "Hungary"), ("borscht", "Ukraine"), ("moussaka", "Greece"), ("tzatziki", "Greece"),
    ("falafel", "Egypt"), ("haggis", "Scotland"), ("pierogi", "Poland"), ("sauerkraut", "Germany"),
    ("bratwurst", "Germany"), ("feijoada", "Brazil"), ("ceviche", "Peru"), ("poutine", "Canada"),
    ("biryani", "India"), ("butter chicken", "India"), ("dim sum", "China"), ("Peking duck", "China"),
    ("fish and chips", "England"), ("baklava", "Turkey"), ("kebab", "Turkey"), ("fondue", "Switzerland"),
)

MOONS: tuple[tuple[str, str], ...] = (
    ("Titan", "Saturn"), ("Enceladus", "Saturn"), ("Mimas", "Saturn"), ("Rhea", "Saturn"), ("Iapetus", "Saturn"),
    ("Europa", "Jupiter"), ("Ganymede", "Jupiter"), ("Callisto", "Jupiter"), ("Io", "Jupiter"),
    ("Phobos", "Mars"), ("Deimos", "Mars"), ("Triton", "Neptune"), ("Nereid", "Neptune"),
    ("Titania", "Uranus"), ("Oberon", "Uranus"), ("Miranda", "Uranus"), ("Ariel", "Uranus"),
    ("Charon", "Pluto"),
)

ATHLETES: tuple[tuple[str, str], ...] = (
    ("Lionel Messi", "football"), ("Cristiano Ronaldo", "football"), ("Pelé", "football"),
    ("Diego Maradona", "football"), ("Zinedine Zidane", "football"), ("David Beckham", "football"),
    ("Roger Federer", "tennis"), ("Rafael Nadal", "tennis"), ("Serena Williams", "tennis"),
    ("Novak Djokovic", "tennis"), ("Andy Murray", "tennis"), ("Venus Williams", "tennis"),
    ("Michael Jordan", "basketball"), ("LeBron James", "basketball"), ("Kobe Bryant", "basketball"),
    ("Shaquille O'Neal", "basketball"), ("Stephen Curry", "basketball"), ("Magic Johnson", "basketball"),
    ("Tiger Woods", "golf"), ("Jack Nicklaus", "golf"), ("Rory McIlroy", "golf"),
    ("Babe Ruth", "baseball"), ("Derek Jeter", "baseball"), ("Wayne Gretzky", "hockey"),
    ("Sachin Tendulkar", "cricket"), ("Don Bradman", "cricket"), ("Muhammad Ali", "boxing"),
    ("Mike Tyson", "boxing"), ("Tom Brady", "football"), ("Usain Bolt", "athletics"),
)

COMPOSITIONS: tuple[tuple[str, str], ...] = (
    ("The Four Seasons", "Vivaldi"), ("The Magic Flute", "Mozart"),
    ("Eine kleine Nachtmusik", "Mozart"), ("Don Giovanni", "Mozart"),
    ("The Marriage of Figaro", "Mozart"), ("the Moonlight Sonata", "Beethoven"),
    ("Für Elise", "Beethoven"), ("the Ninth Symphony", "Beethoven"),
    ("Swan Lake", "Tchaikovsky"), ("The Nutcracker", "Tchaikovsky"),
    ("The Sleeping Beauty", "Tchaikovsky"), ("the Brandenburg Concertos", "Bach"),
    ("the Goldberg Variations", "Bach"), ("the St Matthew Passion", "Bach"),
    ("Messiah", "Handel"), ("Water Music", "Handel"),
    ("The Blue Danube", "Strauss"), ("Boléro", "Ravel"), ("Clair de lune", "Debussy"),
    ("Carmen", "Bizet"), ("La traviata", "Verdi"), ("Aida", "Verdi"),
    ("Rigoletto", "Verdi"), ("Madama Butterfly", "Puccini"), ("La bohème", "Puccini"),
    ("Tosca", "Puccini"), ("The Rite of Spring", "Stravinsky"), ("The Firebird", "Stravinsky"),
    ("Rhapsody in Blue", "Gershwin"), ("The Planets", "Holst"),
    ("The Barber of Seville", "Rossini"), ("the Ring cycle", "Wagner"),
)

LANDFORMS: tuple[tuple[str, str], ...] = (
    ("Mount Everest", "Nepal"), ("Mount Fuji", "Japan"), ("Mount Kilimanjaro", "Tanzania"),
    ("the Matterhorn", "Switzerland"), ("Mont Blanc", "France"), ("Mount Vesuvius", "Italy"), ("Mount Etna", "Italy"),
    ("the Amazon River", "Brazil"), ("Lake Baikal", "Russia"), ("the Volga", "Russia"), ("Loch Ness", "Scotland"),
    ("the Great Barrier Reef", "Australia"), ("Uluru", "Australia"), ("the Grand Canyon", "United States"),
    ("Yellowstone", "United States"), ("Death Valley", "United States"), ("Angel Falls", "Venezuela"),
    ("Iguazu Falls", "Argentina"), ("Lake Titicaca", "Peru"), ("the Yangtze", "China"), ("the Ganges", "India"),
    ("Mount Olympus", "Greece"), ("the Dead Sea", "Jordan"), ("the Blue Lagoon", "Iceland"),
    ("the Cliffs of Moher", "Ireland"), ("Lake Como", "Italy"), ("the Black Forest", "Germany"),
    ("the Zugspitze", "Germany"), ("Ha Long Bay", "Vietnam"), ("Mount Kinabalu", "Malaysia"),
)

CURRENCIES: tuple[tuple[str, str], ...] = (
    ("Japan", "yen"), ("China", "yuan"), ("India", "rupee"), ("Pakistan", "rupee"), ("Nepal", "rupee"),
    ("Sri Lanka", "rupee"), ("the United States", "dollar"), ("Canada", "dollar"), ("Australia", "dollar"),
    ("New Zealand", "dollar"), ("Singapore", "dollar"), ("Jamaica", "dollar"), ("the United Kingdom", "pound"),
    ("Egypt", "pound"), ("Germany", "euro"), ("France", "euro"), ("Italy", "euro"), ("Spain", "euro"),
    ("Ireland", "euro"), ("Finland", "euro"), ("Russia", "ruble"), ("Belarus", "ruble"), ("Mexico", "peso"),
    ("Argentina", "peso"), ("Chile", "peso"), ("Colombia", "peso"), ("the Philippines", "peso"),
    ("Brazil", "real"), ("South Korea", "won"), ("Switzerland", "franc"), ("Sweden", "krona"),
    ("Norway", "krone"), ("Denmark", "krone"), ("Poland", "złoty"), ("Turkey", "lira"), ("Thailand", "baht"),
    ("Vietnam", "dong"), ("South Africa", "rand"), ("Nigeria", "naira"), ("Israel", "shekel"),
)

SCIENTISTS: tuple[tuple[str, str], ...] = (
    ("Albert Einstein", "physics"), ("Isaac Newton", "physics"), ("Niels Bohr", "physics"),
    ("Max Planck", "physics"), ("Richard Feynman", "physics"), ("Galileo Galilei", "physics"),
    ("Marie Curie", "chemistry"), ("Dmitri Mendeleev", "chemistry"), ("Antoine Lavoisier", "chemistry"),
    ("Linus Pauling", "chemistry"), ("Charles Darwin", "biology"), ("Gregor Mendel", "biology"),
    ("Louis Pasteur", "biology"), ("Carl Linnaeus", "biology"), ("Euclid", "mathematics"),
    ("Carl Friedrich Gauss", "mathematics"), ("Leonhard Euler", "mathematics"), ("Pythagoras", "mathematics"),
    ("Alan Turing", "computer science"), ("Ada Lovelace", "computer science"), ("Sigmund Freud", "psychology"),
    ("Carl Jung", "psychology"), ("Adam Smith", "economics"), ("John Maynard Keynes", "economics"),
    ("Edwin Hubble", "astronomy"), ("Johannes Kepler", "astronomy"), ("Nicolaus Copernicus", "astronomy"),
    ("Carl Sagan", "astronomy"), ("Charles Lyell", "geology"), ("Hippocrates", "medicine"),
)

PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "P495": DISHES, "P397": MOONS, "P641": ATHLETES, "P86": COMPOSITIONS, "P17G": LANDFORMS, "P38": CURRENCIES,
    "P101": SCIENTISTS,
}
"""Each relation's (subject, answer) candidates, in a fixed order."""
