"""Candidate facts for the *fresh* SmolLM2 fact set: written after ROME's plateau stop rule was frozen.

The untuned set (``smollm2_untuned_sources.py``) found a failure of the first plateau rule (one rewrite stopped
before the optimisation took hold), so it could not also judge the rule's fix; this third set does. Its relations
and subjects are disjoint from both other sets' (chemical elements, animals, inventions, musicians' instruments,
people's birth countries, colours, gods, products). Written by hand from general knowledge (well-known, stable facts
only; templates and candidates were changed only where the model knew too few of a relation to keep it, before any
edit ran on them); ``make_smollm2_facts.py --set fresh`` keeps those the model knows. Conventions as
``smollm2_sources.py`` ("the X" takes the article in prompts; answers never start with "the").
"""

from __future__ import annotations

from obliviate.data.smollm2_sources import Relation

RELATIONS: dict[str, Relation] = {
    r.relation_id: r
    for r in (
        Relation(
            "P246", "element-symbol",
            "The chemical symbol of {} is",
            ("In the periodic table, {} has the symbol", "Chemists write {} with the symbol"),
            ("{} is used to make", "The discovery of {}"),
        ),
        Relation(
            "P279", "animal-class",
            "{} is a kind of",
            ("Biologists classify {} as a kind of", "In the animal kingdom, {} is a"),
            ("{} lives in", "A picture of {} shows"),
        ),
        Relation(
            "P61", "invention-inventor",
            "{} was invented by",
            ("The inventor of {} is", "{} is an invention of"),
            ("{} changed the way people", "Before {}, people"),
        ),
        Relation(
            "P1303", "musician-instrument",
            "{} was famous for playing the",
            ("The instrument that {} played is the", "{} became a star playing the"),
            ("{} grew up in", "The music of {}"),
        ),
        Relation(
            "P27", "person-birth-country",
            "{} was born in the country of",
            ("The birthplace of {} is the country of", "{} came into the world in the country of"),
            ("{} is remembered for", "The life of {}"),
        ),
        Relation(
            "P462", "colour",
            "The usual colour of {} is",
            ("The colour of {} is usually", "If you look at {}, the colour you see is"),
            ("People like {} because", "You can find {}"),
        ),
        Relation(
            "P1049", "deity-mythology",
            "{} is a god from the mythology of the ancient",
            ("{} belongs to the religion of the ancient", "{} was worshipped by the ancient"),
            ("Stories about {} say", "Temples to {}"),
        ),
        Relation(
            "P178", "product-developer",
            "{} was developed by",
            ("{} is a product made by the company", "The company behind {} is"),
            ("People use {} to", "The first version of {}"),
        ),
    )
}

ELEMENTS: tuple[tuple[str, str], ...] = (
    ("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("copper", "Cu"), ("lead", "Pb"), ("sodium", "Na"),
    ("potassium", "K"), ("mercury", "Hg"), ("tin", "Sn"), ("oxygen", "O"), ("hydrogen", "H"), ("carbon", "C"),
    ("nitrogen", "N"), ("helium", "He"), ("neon", "Ne"), ("zinc", "Zn"), ("calcium", "Ca"), ("chlorine", "Cl"),
    ("uranium", "U"), ("sulfur", "S"), ("phosphorus", "P"), ("magnesium", "Mg"), ("aluminium", "Al"),
    ("silicon", "Si"), ("lithium", "Li"), ("fluorine", "F"), ("platinum", "Pt"), ("tungsten", "W"),
)

ANIMALS: tuple[tuple[str, str], ...] = (
    ("the eagle", "bird"), ("the owl", "bird"), ("the parrot", "bird"), ("the penguin", "bird"),
    ("the ostrich", "bird"), ("the sparrow", "bird"), ("the salmon", "fish"), ("the tuna", "fish"),
    ("the trout", "fish"), ("the cod", "fish"), ("the goldfish", "fish"), ("the shark", "fish"),
    ("the whale", "mammal"), ("the dolphin", "mammal"), ("the bat", "mammal"), ("the elephant", "mammal"),
    ("the lion", "mammal"), ("the horse", "mammal"), ("the snake", "reptile"), ("the lizard", "reptile"),
    ("the crocodile", "reptile"), ("the turtle", "reptile"), ("the frog", "amphibian"), ("the salamander", "amphibian"),
    ("the toad", "amphibian"), ("the ant", "insect"), ("the bee", "insect"), ("the butterfly", "insect"),
    ("the beetle", "insect"), ("the mosquito", "insect"), ("the spider", "arachnid"), ("the scorpion", "arachnid"),
)

INVENTIONS: tuple[tuple[str, str], ...] = (
    ("the telephone", "Alexander Graham Bell"), ("the light bulb", "Thomas Edison"),
    ("the phonograph", "Thomas Edison"), ("the printing press", "Johannes Gutenberg"),
    ("the World Wide Web", "Tim Berners-Lee"), ("dynamite", "Alfred Nobel"),
    ("the radio", "Guglielmo Marconi"),
    ("the steam engine", "James Watt"), ("the cotton gin", "Eli Whitney"),
    ("penicillin", "Alexander Fleming"), ("the television", "John Logie Baird"),
    ("the alternating current motor", "Nikola Tesla"), ("the telegraph", "Samuel Morse"),
    ("Morse code", "Samuel Morse"), ("the diesel engine", "Rudolf Diesel"),
    ("the revolver", "Samuel Colt"), ("the lightning rod", "Benjamin Franklin"),
    ("bifocal glasses", "Benjamin Franklin"), ("the polio vaccine", "Jonas Salk"),
    ("the smallpox vaccine", "Edward Jenner"), ("the safety razor", "King Gillette"),
    ("the Rubik's Cube", "Ernő Rubik"), ("the sewing machine", "Elias Howe"),
    ("the jet engine", "Frank Whittle"), ("braille", "Louis Braille"), ("the telescope", "Galileo"),
    ("the bicycle", "Karl Drais"), ("the automobile", "Karl Benz"), ("the computer mouse", "Douglas Engelbart"),
    ("the periodic table", "Dmitri Mendeleev"), ("the theory of relativity", "Albert Einstein"),
    ("the theory of evolution", "Charles Darwin"), ("the microwave oven", "Percy Spencer"),
    ("the battery", "Alessandro Volta"), ("the barometer", "Evangelista Torricelli"),
    ("the thermometer", "Galileo"), ("the calculus", "Isaac Newton"), ("the mechanical clock", "Christiaan Huygens"),
)

MUSICIANS: tuple[tuple[str, str], ...] = (
    ("Jimi Hendrix", "guitar"), ("Eric Clapton", "guitar"), ("B.B. King", "guitar"), ("Jimmy Page", "guitar"),
    ("Eddie Van Halen", "guitar"), ("Carlos Santana", "guitar"), ("Slash", "guitar"),
    ("Louis Armstrong", "trumpet"), ("Miles Davis", "trumpet"), ("Dizzy Gillespie", "trumpet"),
    ("John Coltrane", "saxophone"), ("Charlie Parker", "saxophone"), ("Kenny G", "saxophone"),
    ("Yo-Yo Ma", "cello"), ("Pablo Casals", "cello"), ("Itzhak Perlman", "violin"), ("Niccolò Paganini", "violin"),
    ("Joshua Bell", "violin"), ("Ringo Starr", "drums"), ("Keith Moon", "drums"), ("John Bonham", "drums"),
    ("Buddy Rich", "drums"), ("Lang Lang", "piano"), ("Glenn Gould", "piano"), ("Vladimir Horowitz", "piano"),
    ("Thelonious Monk", "piano"), ("Paul McCartney", "bass"), ("Flea", "bass"), ("Bob Dylan", "harmonica"),
    ("Ravi Shankar", "sitar"),
)

BIRTH_COUNTRIES: tuple[tuple[str, str], ...] = (
    ("Napoleon Bonaparte", "France"), ("Joan of Arc", "France"), ("Victor Hugo", "France"),
    ("Leonardo da Vinci", "Italy"), ("Julius Caesar", "Italy"), ("Dante Alighieri", "Italy"),
    ("Christopher Columbus", "Italy"), ("Mahatma Gandhi", "India"), ("Jawaharlal Nehru", "India"),
    ("Confucius", "China"), ("Mao Zedong", "China"), ("Genghis Khan", "Mongolia"),
    ("Nelson Mandela", "South Africa"), ("Winston Churchill", "England"), ("Queen Victoria", "England"),
    ("William Shakespeare", "England"), ("George Washington", "United States"), ("Abraham Lincoln", "United States"),
    ("Martin Luther King Jr.", "United States"), ("Vladimir Lenin", "Russia"), ("Peter the Great", "Russia"),
    ("Frida Kahlo", "Mexico"), ("Che Guevara", "Argentina"), ("Simón Bolívar", "Venezuela"),
    ("Cleopatra", "Egypt"), ("Alexander the Great", "Macedonia"), ("Socrates", "Greece"), ("Plato", "Greece"),
    ("Adolf Hitler", "Austria"), ("Karl Marx", "Germany"), ("Martin Luther", "Germany"),
    ("Wolfgang Amadeus Mozart", "Austria"), ("Ludwig van Beethoven", "Germany"), ("Johann Sebastian Bach", "Germany"),
    ("Pablo Picasso", "Spain"), ("Miguel de Cervantes", "Spain"), ("Vincent van Gogh", "Netherlands"),
    ("Rembrandt", "Netherlands"), ("Leo Tolstoy", "Russia"), ("Fyodor Dostoevsky", "Russia"),
    ("Hans Christian Andersen", "Denmark"), ("Henrik Ibsen", "Norway"), ("Ernest Hemingway", "United States"),
    ("Mark Twain", "United States"), ("Charles Dickens", "England"), ("Jane Austen", "England"),
    ("Gabriel García Márquez", "Colombia"), ("Pablo Neruda", "Chile"), ("Rabindranath Tagore", "India"),
    ("Ho Chi Minh", "Vietnam"), ("Fidel Castro", "Cuba"), ("Haile Selassie", "Ethiopia"),
)

COLOURS: tuple[tuple[str, str], ...] = (
    ("ripe bananas", "yellow"), ("lemons", "yellow"), ("sunflowers", "yellow"), ("egg yolks", "yellow"),
    ("ripe tomatoes", "red"), ("strawberries", "red"), ("blood", "red"), ("fire trucks", "red"),
    ("cherries", "red"), ("grass", "green"), ("limes", "green"), ("cucumbers", "green"), ("emeralds", "green"),
    ("frogs", "green"), ("sapphires", "blue"), ("blueberries", "blue"),
    ("snow", "white"), ("milk", "white"), ("clouds", "white"), ("polar bears", "white"), ("coal", "black"),
    ("crows", "black"), ("oranges", "orange"), ("carrots", "orange"), ("pumpkins", "orange"),
    ("chocolate", "brown"), ("coffee beans", "brown"), ("flamingos", "pink"), ("eggplants", "purple"),
    ("lavender", "purple"),
)

DEITIES: tuple[tuple[str, str], ...] = (
    ("Zeus", "Greeks"), ("Hera", "Greeks"), ("Poseidon", "Greeks"), ("Athena", "Greeks"), ("Apollo", "Greeks"),
    ("Hades", "Greeks"), ("Aphrodite", "Greeks"), ("Hermes", "Greeks"), ("Dionysus", "Greeks"),
    ("Jupiter", "Romans"), ("Juno", "Romans"), ("Neptune", "Romans"), ("Minerva", "Romans"), ("Mars", "Romans"),
    ("Venus", "Romans"), ("Janus", "Romans"), ("Ra", "Egyptians"), ("Osiris", "Egyptians"), ("Isis", "Egyptians"),
    ("Anubis", "Egyptians"), ("Horus", "Egyptians"), ("Thoth", "Egyptians"), ("Odin", "Norse"), ("Thor", "Norse"),
    ("Loki", "Norse"), ("Freya", "Norse"), ("Quetzalcoatl", "Aztecs"), ("Huitzilopochtli", "Aztecs"),
    ("Marduk", "Babylonians"), ("Ishtar", "Babylonians"),
)

PRODUCTS: tuple[tuple[str, str], ...] = (
    ("the iPhone", "Apple"), ("the iPad", "Apple"), ("the MacBook", "Apple"), ("the Apple Watch", "Apple"),
    ("Windows", "Microsoft"), ("the Xbox", "Microsoft"), ("Microsoft Word", "Microsoft"), ("Excel", "Microsoft"),
    ("Android", "Google"), ("Gmail", "Google"), ("YouTube", "Google"), ("Chrome", "Google"),
    ("the PlayStation", "Sony"), ("the Walkman", "Sony"), ("the Galaxy S", "Samsung"),
    ("the Nintendo Switch", "Nintendo"), ("the Game Boy", "Nintendo"), ("the Kindle", "Amazon"),
    ("Alexa", "Amazon"), ("the Model S", "Tesla"), ("the Model 3", "Tesla"), ("the Beetle", "Volkswagen"),
    ("the Golf", "Volkswagen"), ("the Mustang", "Ford"), ("the Model T", "Ford"), ("the Corolla", "Toyota"),
    ("the Prius", "Toyota"), ("the Civic", "Honda"), ("the 747", "Boeing"), ("Instagram", "Meta"),
    ("WhatsApp", "Meta"), ("Photoshop", "Adobe"),
)

PAIRS: dict[str, tuple[tuple[str, str], ...]] = {
    "P246": ELEMENTS, "P279": ANIMALS, "P61": INVENTIONS, "P1303": MUSICIANS, "P27": BIRTH_COUNTRIES, "P462": COLOURS,
    "P1049": DEITIES, "P178": PRODUCTS,
}
"""Each relation's (subject, answer) candidates, in a fixed order."""
