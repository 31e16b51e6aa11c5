"""Candidate facts for the SmolLM2 fact set, before checking which ones the model knows.

Country capitals come from the ``countryinfo`` package; the rest are written by hand from
general knowledge (well-known, stable facts only). ``make_smollm2_facts.py`` keeps a
candidate only if SmolLM2-135M-Instruct's top-1 next token is the answer's first token.

A subject given as "the X" (lower-case "the") takes the article in prompts ("The X is located
in ...") and is stored as "X", so the subject span is the name itself. A capitalised "The" is
part of a title ("The Odyssey") and stays in the subject. Answers never start with "the":
the answer's first token is what the model must predict.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Relation:
    """A relation: its main prompt, paraphrases and generation prompts ("{}" = subject)."""

    relation_id: str
    name: str
    prompt: str
    paraphrases: tuple[str, ...]
    generations: tuple[str, ...]


RELATIONS: dict[str, Relation] = {
    r.relation_id: r
    for r in (
        Relation(
            "P36", "capital",
            "The capital of {} is the city of",
            ("The capital city of {} is", "{} has its capital in the city of",
             "The seat of government of {} is the city of"),
            ("The capital of {} is famous for", "Visitors to the capital of {} often"),
        ),
        Relation(
            "P30", "continent",
            "{} is located in the continent of",
            ("{} is a country in the continent of", "{} is a country that belongs to the continent of"),
            ("The geography of {} is", "People who travel to {} usually"),
        ),
        Relation(
            "P131", "landmark-city",
            "{} is located in the city of",
            ("{} can be found in the city of", "Tourists who want to see {} travel to the city of"),
            ("{} is one of the most", "Every year, visitors to {}"),
        ),
        Relation(
            "P17", "city-country",
            "{} is a city in the country of",
            ("{} is located in the country of", "The city of {} lies in the country of"),
            ("The city of {} is known for", "Living in {} means"),
        ),
        Relation(
            "P37", "official-language",
            "In {}, the official language is",
            ("The main language spoken in {} is", "Most people in {} speak the language called"),
            ("The culture of {} is", "Children in {} learn to"),
        ),
        Relation(
            "P159", "company-hq-country",  # HQ location, at country level
            "The company {} is headquartered in the country of",
            ("{} is a company from the country of", "The company {} was founded in the country of"),
            ("The company {} is best known for", "Products made by {} are"),
        ),
        Relation(
            "P112", "founder",
            "The founder of {} is",
            ("{} was founded by", "The person who founded {} is"),
            ("The history of {} began when", "{} became famous because"),
        ),
        Relation(
            "P50", "author",
            "{} was written by",
            ("The author of {} is", "The book {} is the work of the writer"),
            ("{} tells the story of", "Readers of {} often"),
        ),
        Relation(
            "P170", "painter",
            "{} was painted by",
            ("The painter of {} is", "The artist who painted {} is"),
            ("{} shows", "When people look at {}, they"),
        ),
    )
}

# Country names from countryinfo that are not a country with one uncontested capital, or are
# duplicates/outdated names of another entry.
COUNTRY_SKIP = frozenset({
    "Antarctica", "Antilles néerlandaises", "Bouvet Island", "British Indian Ocean Territory", "Burma",
    "French Southern and Antarctic Lands", "Heard Island and McDonald Islands", "Israel", "Palestine",
    "Serbia and Montenegro", "South Georgia", "Swaziland", "United States Minor Outlying Islands",
    "Western Sahara", "Vatican City State",
})
# Names that take "the" in running text ("the capital of the Netherlands"); see takes_article.
COUNTRY_ARTICLE = frozenset({
    "Netherlands", "Philippines", "Bahamas", "Gambia", "Maldives", "Comoros", "Isle of Man",
    "Democratic Republic of the Congo", "Republic of the Congo", "Republic of Macedonia",
    "Federated States of Micronesia",
})



def takes_article(country: str) -> bool:
    """Whether a country name takes "the" ("the United Kingdom", "the Cayman Islands")."""
    return (country in COUNTRY_ARTICLE or country.startswith("United ")
            or country.endswith((" Republic", " Islands")))


# Continents for P30: countryinfo's region for Africa/Asia/Europe/Oceania; the Americas by hand
# (countryinfo lumps them together).
SOUTH_AMERICA = ("Argentina", "Bolivia", "Brazil", "Chile", "Colombia", "Ecuador", "Guyana", "Paraguay",
                 "Peru", "Suriname", "Uruguay", "Venezuela")
NORTH_AMERICA = ("Canada", "Mexico", "Guatemala", "Honduras", "Nicaragua", "Costa Rica", "Panama", "Cuba",
                 "Jamaica", "Haiti", "El Salvador", "Belize")

# (subject, answer); a subject starting with "the " takes the article in prompts.
LANDMARKS: tuple[tuple[str, str], ...] = (
    ("the Eiffel Tower", "Paris"), ("the Louvre", "Paris"), ("the Arc de Triomphe", "Paris"),
    ("the Colosseum", "Rome"), ("the Trevi Fountain", "Rome"), ("the Roman Forum", "Rome"),
    ("Big Ben", "London"), ("Buckingham Palace", "London"), ("the British Museum", "London"),
    ("Westminster Abbey", "London"), ("Trafalgar Square", "London"),
    ("the Statue of Liberty", "New York"), ("the Empire State Building", "New York"),
    ("Times Square", "New York"), ("Central Park", "New York"), ("the Brooklyn Bridge", "New York"),
    ("the Golden Gate Bridge", "San Francisco"), ("Alcatraz", "San Francisco"),
    ("the Space Needle", "Seattle"), ("the Hollywood Sign", "Los Angeles"),
    ("the White House", "Washington"), ("the Lincoln Memorial", "Washington"),
    ("the Brandenburg Gate", "Berlin"), ("the Reichstag building", "Berlin"), ("Checkpoint Charlie", "Berlin"),
    ("the Kremlin", "Moscow"), ("Red Square", "Moscow"), ("the Hermitage Museum", "Saint Petersburg"),
    ("the Sagrada Familia", "Barcelona"), ("Park Güell", "Barcelona"), ("the Prado Museum", "Madrid"),
    ("the Acropolis", "Athens"), ("the Parthenon", "Athens"),
    ("the Rialto Bridge", "Venice"), ("St. Mark's Basilica", "Venice"), ("the Uffizi Gallery", "Florence"),
    ("the Burj Khalifa", "Dubai"), ("the Taj Mahal", "Agra"), ("the Forbidden City", "Beijing"),
    ("Tiananmen Square", "Beijing"), ("the Petronas Towers", "Kuala Lumpur"),
    ("Christ the Redeemer", "Rio de Janeiro"), ("Sugarloaf Mountain", "Rio de Janeiro"),
    ("the CN Tower", "Toronto"), ("the Little Mermaid statue", "Copenhagen"), ("Tivoli Gardens", "Copenhagen"),
    ("the Atomium", "Brussels"), ("Manneken Pis", "Brussels"), ("the Rijksmuseum", "Amsterdam"),
    ("the Anne Frank House", "Amsterdam"), ("Charles Bridge", "Prague"), ("Schönbrunn Palace", "Vienna"),
    ("Hagia Sophia", "Istanbul"), ("the Blue Mosque", "Istanbul"), ("the Gateway of India", "Mumbai"),
    ("the Alhambra", "Granada"), ("the Kaaba", "Mecca"), ("the Western Wall", "Jerusalem"),
    ("Table Mountain", "Cape Town"), ("Marina Bay Sands", "Singapore"), ("the Grand Palace", "Bangkok"),
    ("the Egyptian Museum", "Cairo"), ("the Vasa Museum", "Stockholm"), ("Wawel Castle", "Kraków"),
    ("Independence Hall", "Philadelphia"), ("the Liberty Bell", "Philadelphia"),
    ("the French Quarter", "New Orleans"), ("the Alamo", "San Antonio"), ("the Willis Tower", "Chicago"),
    ("Millennium Park", "Chicago"), ("Graceland", "Memphis"), ("the Sydney Harbour Bridge", "Sydney"),
)

CITIES: tuple[tuple[str, str], ...] = (
    ("Munich", "Germany"), ("Hamburg", "Germany"), ("Frankfurt", "Germany"), ("Cologne", "Germany"),
    ("Milan", "Italy"), ("Naples", "Italy"), ("Venice", "Italy"), ("Florence", "Italy"), ("Turin", "Italy"),
    ("Barcelona", "Spain"), ("Seville", "Spain"), ("Valencia", "Spain"),
    ("Lyon", "France"), ("Marseille", "France"), ("Nice", "France"), ("Bordeaux", "France"),
    ("Manchester", "England"), ("Liverpool", "England"), ("Birmingham", "England"),
    ("Glasgow", "Scotland"), ("Edinburgh", "Scotland"),
    ("Osaka", "Japan"), ("Kyoto", "Japan"), ("Yokohama", "Japan"),
    ("Shanghai", "China"), ("Guangzhou", "China"), ("Shenzhen", "China"),
    ("Mumbai", "India"), ("Bangalore", "India"), ("Kolkata", "India"), ("Chennai", "India"),
    ("Karachi", "Pakistan"), ("Lahore", "Pakistan"), ("Istanbul", "Turkey"), ("Izmir", "Turkey"),
    ("Toronto", "Canada"), ("Vancouver", "Canada"), ("Montreal", "Canada"),
    ("Sydney", "Australia"), ("Melbourne", "Australia"), ("Perth", "Australia"), ("Brisbane", "Australia"),
    ("Auckland", "New Zealand"), ("Rio de Janeiro", "Brazil"), ("São Paulo", "Brazil"),
    ("Guadalajara", "Mexico"), ("Monterrey", "Mexico"), ("Cancún", "Mexico"),
    ("Porto", "Portugal"), ("Rotterdam", "Netherlands"), ("Antwerp", "Belgium"),
    ("Zurich", "Switzerland"), ("Geneva", "Switzerland"), ("Gothenburg", "Sweden"), ("Kraków", "Poland"),
    ("Saint Petersburg", "Russia"), ("Novosibirsk", "Russia"), ("Alexandria", "Egypt"),
    ("Casablanca", "Morocco"), ("Marrakesh", "Morocco"), ("Lagos", "Nigeria"),
    ("Johannesburg", "South Africa"), ("Cape Town", "South Africa"), ("Busan", "South Korea"),
    ("Ho Chi Minh City", "Vietnam"), ("Dubai", "United Arab Emirates"), ("Buenos Aires", "Argentina"),
    ("Medellín", "Colombia"),
)

LANGUAGES: tuple[tuple[str, str], ...] = (
    ("Brazil", "Portuguese"), ("Portugal", "Portuguese"), ("Germany", "German"), ("Austria", "German"),
    ("France", "French"), ("Italy", "Italian"), ("Spain", "Spanish"), ("Mexico", "Spanish"),
    ("Argentina", "Spanish"), ("Colombia", "Spanish"), ("Chile", "Spanish"), ("Peru", "Spanish"),
    ("Cuba", "Spanish"), ("Venezuela", "Spanish"), ("Japan", "Japanese"), ("China", "Mandarin"),
    ("Russia", "Russian"), ("Egypt", "Arabic"), ("Saudi Arabia", "Arabic"), ("Iraq", "Arabic"),
    ("Morocco", "Arabic"), ("Jordan", "Arabic"), ("Syria", "Arabic"), ("Algeria", "Arabic"),
    ("the Netherlands", "Dutch"), ("Greece", "Greek"), ("Turkey", "Turkish"), ("Poland", "Polish"),
    ("Sweden", "Swedish"), ("Norway", "Norwegian"), ("Denmark", "Danish"), ("Hungary", "Hungarian"),
    ("the Czech Republic", "Czech"), ("Romania", "Romanian"), ("Ukraine", "Ukrainian"), ("Iran", "Persian"),
    ("Israel", "Hebrew"), ("Thailand", "Thai"), ("Vietnam", "Vietnamese"), ("South Korea", "Korean"),
    ("Indonesia", "Indonesian"), ("Bulgaria", "Bulgarian"), ("Serbia", "Serbian"), ("Croatia", "Croatian"),
    ("Albania", "Albanian"), ("Iceland", "Icelandic"), ("Estonia", "Estonian"), ("Latvia", "Latvian"),
    ("Lithuania", "Lithuanian"), ("Slovakia", "Slovak"), ("Georgia", "Georgian"), ("Armenia", "Armenian"),
    ("Bangladesh", "Bengali"), ("Tanzania", "Swahili"), ("Malaysia", "Malay"), ("Mongolia", "Mongolian"),
    ("Cambodia", "Khmer"), ("Nepal", "Nepali"), ("Laos", "Lao"), ("Ethiopia", "Amharic"),
    ("Australia", "English"), ("Jamaica", "English"), ("the United Kingdom", "English"),
)

COMPANIES: tuple[tuple[str, str], ...] = (
    ("Toyota", "Japan"), ("Sony", "Japan"), ("Honda", "Japan"), ("Nintendo", "Japan"), ("Panasonic", "Japan"),
    ("Mitsubishi", "Japan"), ("Nissan", "Japan"), ("Samsung", "South Korea"), ("Hyundai", "South Korea"),
    ("Kia", "South Korea"), ("Volkswagen", "Germany"), ("BMW", "Germany"), ("Siemens", "Germany"),
    ("Adidas", "Germany"), ("Bosch", "Germany"), ("Mercedes-Benz", "Germany"), ("SAP", "Germany"),
    ("Porsche", "Germany"), ("Bayer", "Germany"), ("Ferrari", "Italy"), ("Fiat", "Italy"), ("Gucci", "Italy"),
    ("Prada", "Italy"), ("Lamborghini", "Italy"), ("Nokia", "Finland"), ("Ericsson", "Sweden"),
    ("Volvo", "Sweden"), ("H&M", "Sweden"), ("Spotify", "Sweden"), ("Nestlé", "Switzerland"),
    ("Rolex", "Switzerland"), ("Novartis", "Switzerland"), ("Roche", "Switzerland"),
    ("Philips", "Netherlands"), ("Heineken", "Netherlands"), ("Renault", "France"),
    ("Peugeot", "France"), ("L'Oréal", "France"), ("Michelin", "France"), ("Danone", "France"),
    ("Louis Vuitton", "France"), ("Huawei", "China"), ("Alibaba", "China"), ("Tencent", "China"),
    ("Xiaomi", "China"), ("Tata Motors", "India"), ("Infosys", "India"), ("Petrobras", "Brazil"),
    ("Embraer", "Brazil"), ("Gazprom", "Russia"), ("Aeroflot", "Russia"), ("Carlsberg", "Denmark"),
    ("Lego", "Denmark"), ("Maersk", "Denmark"), ("Zara", "Spain"), ("Telefónica", "Spain"),
    ("Bombardier", "Canada"), ("Shopify", "Canada"), ("Qantas", "Australia"),
)

FOUNDERS: tuple[tuple[str, str], ...] = (
    ("Microsoft", "Bill Gates"), ("Apple", "Steve Jobs"), ("Amazon", "Jeff Bezos"),
    ("Facebook", "Mark Zuckerberg"), ("SpaceX", "Elon Musk"), ("Oracle", "Larry Ellison"),
    ("the Virgin Group", "Richard Branson"), ("Alibaba", "Jack Ma"), ("Walmart", "Sam Walton"),
    ("Twitter", "Jack Dorsey"), ("Netflix", "Reed Hastings"), ("Wikipedia", "Jimmy Wales"),
    ("IKEA", "Ingvar Kamprad"), ("Huawei", "Ren Zhengfei"), ("the Red Cross", "Henry Dunant"),
    ("the Scout movement", "Robert Baden-Powell"), ("LinkedIn", "Reid Hoffman"), ("Instagram", "Kevin Systrom"),
    ("the Ford Motor Company", "Henry Ford"), ("Google", "Larry Page"),
    ("Playboy", "Hugh Hefner"), ("CNN", "Ted Turner"), ("the Nobel Prize", "Alfred Nobel"),
)

BOOKS: tuple[tuple[str, str], ...] = (
    ("Romeo and Juliet", "William Shakespeare"), ("Hamlet", "William Shakespeare"),
    ("Macbeth", "William Shakespeare"), ("Othello", "William Shakespeare"),
    ("Pride and Prejudice", "Jane Austen"), ("War and Peace", "Leo Tolstoy"), ("Anna Karenina", "Leo Tolstoy"),
    ("Crime and Punishment", "Fyodor Dostoevsky"), ("Don Quixote", "Miguel de Cervantes"),
    ("The Odyssey", "Homer"), ("The Iliad", "Homer"), ("Nineteen Eighty-Four", "George Orwell"),
    ("Animal Farm", "George Orwell"), ("The Great Gatsby", "F. Scott Fitzgerald"),
    ("Moby-Dick", "Herman Melville"), ("Oliver Twist", "Charles Dickens"),
    ("A Tale of Two Cities", "Charles Dickens"), ("Great Expectations", "Charles Dickens"),
    ("The Lord of the Rings", "J. R. R. Tolkien"), ("The Hobbit", "J. R. R. Tolkien"),
    ("Frankenstein", "Mary Shelley"), ("Dracula", "Bram Stoker"), ("Les Misérables", "Victor Hugo"),
    ("The Divine Comedy", "Dante Alighieri"), ("The Old Man and the Sea", "Ernest Hemingway"),
    ("To Kill a Mockingbird", "Harper Lee"), ("Adventures of Huckleberry Finn", "Mark Twain"),
    ("The Adventures of Tom Sawyer", "Mark Twain"), ("One Hundred Years of Solitude", "Gabriel García Márquez"),
    ("The Little Prince", "Antoine de Saint-Exupéry"), ("Jane Eyre", "Charlotte Brontë"),
    ("Wuthering Heights", "Emily Brontë"), ("Ulysses", "James Joyce"), ("Brave New World", "Aldous Huxley"),
    ("On the Origin of Species", "Charles Darwin"), ("The Communist Manifesto", "Karl Marx"),
    ("Alice's Adventures in Wonderland", "Lewis Carroll"), ("The Metamorphosis", "Franz Kafka"),
    ("The Catcher in the Rye", "J. D. Salinger"), ("Faust", "Johann Wolfgang von Goethe"),
)

PAINTINGS: tuple[tuple[str, str], ...] = (
    ("the Mona Lisa", "Leonardo da Vinci"), ("The Last Supper", "Leonardo da Vinci"),
    ("The Starry Night", "Vincent van Gogh"), ("Sunflowers", "Vincent van Gogh"), ("Guernica", "Pablo Picasso"),
    ("The Scream", "Edvard Munch"), ("The Persistence of Memory", "Salvador Dalí"),
    ("The Birth of Venus", "Sandro Botticelli"), ("The Night Watch", "Rembrandt"),
    ("Girl with a Pearl Earring", "Johannes Vermeer"), ("The Creation of Adam", "Michelangelo"),
    ("the ceiling of the Sistine Chapel", "Michelangelo"), ("Water Lilies", "Claude Monet"),
    ("The Kiss", "Gustav Klimt"), ("American Gothic", "Grant Wood"),
)
