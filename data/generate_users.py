#!/usr/bin/env python3
"""Generate a realistic, deliberately *dirty* users CSV file, streaming.

The output looks like an export from a production user table:

    id,first_name,last_name,email_address,created_at,deleted_at,merged_at,parent_user_id

* ``id`` mostly increases from 1, with gaps; about 0.5% of lines re-use an earlier id with
  changed fields (the later line must win downstream).
* Timestamps are Unix epoch milliseconds (13 digits); ``created_at`` lies in 2015-2025 and
  roughly follows the id order. About 5% of users are deleted and 3% merged; a merged user's
  ``parent_user_id`` points at an earlier id, at a later one, or at one that never appears.
  "None" is written ``-1``, or occasionally (~1%) left empty.
* Names come from embedded lists with non-ASCII names (José, Zoë, Müller), apostrophes
  (O'Brien) and values that need RFC 4180 quoting ("Smith, Jr.", ``Robert "Bob"``). Emails
  are derived from the names over several domains; about 2% repeat another row's email.
* A small fraction of lines (``--bad-fraction``, default 0.3%) are bad, spread over the kinds
  in ``BAD_KINDS``: wrong field count, non-numeric or negative id, empty or non-integer
  ``created_at``, malformed ``deleted_at``, invalid email, first name over 255 characters and
  invalid UTF-8 bytes. There are also occasional blank lines and a few *good* rows with
  spaces around their fields (downstream trims them).

By default (``--ensure-each-kind``) files of at least 100 rows also get one forced example of
every bad kind, of a duplicate id, of a blank line and of a padded row, so even a small
sample exercises every path.

Usage:

    python data/generate_users.py --rows 1000 --seed 42 --output data/users.csv
    python data/generate_users.py --rows 500000 --seed 1 > /tmp/users.csv
    python data/generate_users.py --rows 10000 --bad-fraction 0.01 --stats > /dev/null

``--rows`` counts data lines (bad ones included; the header and blank lines excluded). The
same seed always gives the same bytes. Memory stays flat whatever the row count: only a
small ring of recent rows is kept. Standard library only.
"""

from __future__ import annotations

import argparse
import random
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO

HEADER = "id,first_name,last_name,email_address,created_at,deleted_at,merged_at,parent_user_id"

# Epoch milliseconds: 2015-01-01T00:00:00Z and 2026-01-01T00:00:00Z.
START_MS = 1_420_070_400_000
END_MS = 1_767_225_600_000
DAY_MS = 86_400_000
CREATED_JITTER_MS = 30 * DAY_MS

DELETED_RATE = 0.05
MERGED_RATE = 0.03
EMPTY_NULL_RATE = 0.01  # a "none" field written empty instead of -1
DUPLICATE_ID_RATE = 0.005
REPEATED_EMAIL_RATE = 0.02
MIXED_CASE_EMAIL_RATE = 0.01
ID_GAP_RATE = 0.02
MAX_ID_GAP = 50
BLANK_LINE_RATE = 0.0005
PADDED_ROW_RATE = 0.001
DEFAULT_BAD_FRACTION = 0.003

RECENT_RING_SIZE = 1024  # recent good rows kept for duplicate ids / repeated emails
FLUSH_EVERY = 8192  # lines buffered before one write
ENSURE_MIN_ROWS = 100

BAD_KINDS: tuple[str, ...] = (
    "wrong_field_count",
    "non_numeric_id",
    "negative_id",
    "empty_created_at",
    "non_integer_created_at",
    "malformed_deleted_at",
    "invalid_email",
    "long_first_name",
    "invalid_utf8",
)
# Good-row oddities forced once by --ensure-each-kind, next to the bad kinds.
FORCED_EXTRAS: tuple[str, ...] = ("duplicate_id", "blank_line", "padded_row")

FIRST_NAMES: tuple[str, ...] = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
    "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica",
    "Thomas", "Sarah", "Charles", "Karen", "Christopher", "Nancy", "Daniel", "Lisa",
    "Matthew", "Betty", "Anthony", "Margaret", "Mark", "Sandra", "Donald", "Ashley",
    "Steven", "Kimberly", "Paul", "Emily", "Andrew", "Donna", "Joshua", "Michelle",
    "Kenneth", "Dorothy", "Kevin", "Carol", "Brian", "Amanda", "George", "Melissa",
    "Edward", "Deborah", "Ronald", "Stephanie", "Timothy", "Rebecca", "Jason", "Sharon",
    "Jeffrey", "Laura", "Ryan", "Cynthia", "Jacob", "Kathleen", "Gary", "Amy",
    "Nicholas", "Shirley", "Eric", "Angela", "Jonathan", "Helen", "Stephen", "Anna",
    "Larry", "Brenda", "Justin", "Pamela", "Scott", "Nicole", "Brandon", "Emma",
    "Benjamin", "Samantha", "Samuel", "Katherine", "Gregory", "Christine", "Frank", "Debra",
    "Alexander", "Rachel", "Raymond", "Catherine", "Patrick", "Carolyn", "Jack", "Janet",
    "Dennis", "Ruth", "Jerry", "Maria", "Tyler", "Heather", "Aaron", "Diane",
    "Jose", "Virginia", "Adam", "Julie", "Henry", "Joyce", "Nathan", "Victoria",
    "Douglas", "Olivia", "Zachary", "Kelly", "Peter", "Christina", "Kyle", "Lauren",
    "Walter", "Joan", "Ethan", "Evelyn", "Jeremy", "Judith", "Harold", "Megan",
    "Keith", "Cheryl", "Christian", "Andrea", "Roger", "Hannah", "Noah", "Martha",
    "Gerald", "Jacqueline", "Carl", "Frances", "Terry", "Gloria", "Sean", "Ann",
    "Austin", "Teresa", "Arthur", "Kathryn", "Lawrence", "Sara", "Jesse", "Janice",
    "Dylan", "Jean", "Bryan", "Alice", "Joe", "Madison", "Jordan", "Doris",
    "Liam", "Sophia", "Lucas", "Mia", "Mateo", "Isabella", "Leon", "Aisha",
    "Mohammed", "Fatima", "Wei", "Mei", "Hiroshi", "Yuki", "Priya", "Arjun",
    # Non-ASCII, apostrophes, spaces, hyphens and quotes.
    "José", "Zoë", "François", "Chloé", "Søren", "Björn", "Łukasz", "Jürgen",
    "Renée", "Anaïs", "Iñaki", "Siobhán", "Sinéad", "Åsa", "Ångström", "Mårten",
    "Dvořák", "Agnès", "Hélène", "Céline", "Ñuño", "Ørjan", "Małgorzata", "Dóra",
    "Алексей", "Наталья", "Ελένη", "D'Arcy", "Mary Ann", "Jean-Luc", 'Robert "Bob"',
    "Anne-Marie",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
    "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
    "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
    "Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell",
    "Carter", "Roberts", "Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker",
    "Cruz", "Edwards", "Collins", "Reyes", "Stewart", "Morris", "Morales", "Murphy",
    "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper", "Peterson", "Bailey",
    "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson", "Watson",
    "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
    "Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross",
    "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell",
    "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher", "Vasquez",
    "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham",
    "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant",
    "Herrera", "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray",
    "Ford", "Castro", "Marshall", "Owens", "Harrison", "Fernandez", "McDonald",
    "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen", "Freeman",
    "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter",
    "Hunter", "Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon",
    "Schmidt", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann", "Wang",
    "Li", "Zhang", "Tanaka", "Suzuki", "Sato", "Singh", "Kumar", "Kowalski", "Novak",
    # Non-ASCII, apostrophes, particles, hyphens and commas (need quoting).
    "Müller", "O'Brien", "García", "Núñez", "Østergaard", "Šimek", "Lefèvre",
    "D'Angelo", "van der Berg", "De la Cruz", "Smith-Jones", "Gößling", "Öztürk",
    "Çelik", "Nowakowska", "Søndergaard", "Jäger", "O'Connor", "Ó Súilleabháin",
    "Иванов", "Παπαδόπουλος", "Smith, Jr.", "Williams, III", "Brown, Sr.",
    "King, Jr.", "Davis, II",
)  # fmt: skip

# Repeated entries weight the common providers.
DOMAINS: tuple[str, ...] = (
    *("gmail.com",) * 8,
    *("yahoo.com",) * 3,
    *("outlook.com",) * 3,
    *("hotmail.com",) * 2,
    "icloud.com",
    "proton.me",
    "aol.com",
    "gmx.de",
    "web.de",
    "orange.fr",
    "yahoo.co.uk",
    "mail.ru",
    "example.org",
    "acme-corp.com",
    "company.io",
    "university.edu",
)

INVALID_EMAILS: tuple[str, ...] = (
    "not-an-email",
    "not-an-email",
    "john.smith.example.com",
    "jane@",
    "@gmail.com",
    "user@@gmail.com",
)
NON_NUMERIC_IDS: tuple[str, ...] = ("abc", "N/A", "#REF!", "null", "one")
MALFORMED_TIMESTAMPS: tuple[str, ...] = (
    "abc",
    "abc",
    "not-a-date",
    "12/31/2020",
    "never",
)


def csv_field(value: str) -> str:
    """Quote a value per RFC 4180 when it holds a comma, quote or line break."""
    if any(char in value for char in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


# Romanised forms for names that do not fold to ASCII.
ROMANISED: dict[str, str] = {
    "Алексей": "aleksei",
    "Наталья": "natalya",
    "Ελένη": "eleni",
    "Иванов": "ivanov",
    "Παπαδόπουλος": "papadopoulos",
}

# Letters that NFKD does not decompose to ASCII.
ASCII_LETTERS = str.maketrans(
    {"ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "ß": "ss", "æ": "ae", "Æ": "Ae"},
)


def email_slug(name: str) -> str:
    """ASCII, lower-case, alphanumeric form of a name for email local parts."""
    if name in ROMANISED:
        return ROMANISED[name]
    base = name.split(",")[0]  # "Smith, Jr." -> "Smith"
    decomposed = unicodedata.normalize("NFKD", base.translate(ASCII_LETTERS))
    folded = decomposed.encode("ascii", "ignore").decode("ascii")
    return "".join(char for char in folded.lower() if char.isalnum())


class UsersCsvGenerator:
    """Streams the CSV lines of one dirty users file (as ``str``).

    Raw non-UTF-8 bytes are carried as lone surrogates and written with
    ``errors="surrogateescape"``, so every line flows through the same path.
    """

    def __init__(
        self,
        rows: int,
        seed: int | None = None,
        bad_fraction: float = DEFAULT_BAD_FRACTION,
        ensure_each_kind: bool = True,
    ) -> None:
        if rows < 0:
            raise ValueError("rows must be >= 0")
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be between 0 and 1")
        self.rows = rows
        self.bad_fraction = bad_fraction
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self.first_fields = [csv_field(name) for name in FIRST_NAMES]
        self.last_fields = [csv_field(name) for name in LAST_NAMES]
        self.first_slugs = [email_slug(name) for name in FIRST_NAMES]
        self.last_slugs = [email_slug(name) for name in LAST_NAMES]
        # Ids grow by at most MAX_ID_GAP per line, so ids above this never appear.
        self.id_ceiling = (rows + 1) * MAX_ID_GAP
        # Ring of recent good rows: (id, first_index, last_index, email, created_at).
        self.recent: list[tuple[int, int, int, str, int]] = []
        self.recent_pos = 0
        self.forced = self._plan_forced(ensure_each_kind)

    def _plan_forced(self, ensure_each_kind: bool) -> dict[int, str]:
        """Line positions that get a forced example of each bad kind / oddity."""
        if not ensure_each_kind or self.rows < ENSURE_MIN_ROWS:
            return {}
        kinds = BAD_KINDS + FORCED_EXTRAS
        positions = self.rng.sample(range(self.rows // 20 + 1, self.rows), len(kinds))
        return dict(zip(positions, kinds, strict=True))

    # -- field helpers -------------------------------------------------------------------

    def _email(self, first_index: int, last_index: int) -> str:
        rng = self.rng
        first = self.first_slugs[first_index]
        last = self.last_slugs[last_index]
        domain = DOMAINS[int(rng.random() * len(DOMAINS))]
        pattern = int(rng.random() * 8)
        if pattern <= 1:
            local = f"{first}.{last}"
        elif pattern == 2:
            local = f"{first}{last}"
        elif pattern == 3:
            local = f"{first[0]}{last}"
        elif pattern == 4:
            local = f"{first}.{last}{int(rng.random() * 99) + 1}"
        elif pattern == 5:
            local = f"{first}_{last}"
        elif pattern == 6:
            local = f"{last}.{first}"
        else:
            local = f"{first}{int(rng.random() * 9000) + 10}"
        if rng.random() < MIXED_CASE_EMAIL_RATE:
            return f"{local.capitalize()}@{domain.capitalize()}"
        return f"{local}@{domain}"

    def _created_at(self, line_index: int) -> int:
        span = END_MS - DAY_MS - START_MS
        base = START_MS + span * line_index // max(self.rows, 1)
        created = base + int((self.rng.random() * 2.0 - 1.0) * CREATED_JITTER_MS)
        if created < START_MS:  # reflect rather than clamp: no pile-up at the bounds
            created = 2 * START_MS - created
        elif created > END_MS - DAY_MS:
            created = 2 * (END_MS - DAY_MS) - created
        return created

    def _later_than(self, created: int) -> int:
        return created + 1000 + int(self.rng.random() * (END_MS - created - 1000))

    def _none(self) -> str:
        if self.rng.random() < EMPTY_NULL_RATE:
            self.stats["empty_nullable_field"] += 1
            return ""
        return "-1"

    def _parent_id(self, user_id: int, next_id: int) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.60 and self.recent:
            parent = self.recent[int(rng.random() * len(self.recent))][0]
            kind = "parent_earlier"
        elif roll < 0.75 and user_id > 1:
            parent = 1 + int(rng.random() * (user_id - 1))  # may fall in a gap
            kind = "parent_earlier"
        elif roll < 0.90:
            parent = next_id + int(rng.random() * 200)
            kind = "parent_later"
        else:
            parent = self.id_ceiling + 1 + int(rng.random() * 1_000_000)
            kind = "parent_missing"
        if parent == user_id:
            parent = next_id + 1
            kind = "parent_later"
        self.stats[kind] += 1
        return parent

    def _remember(self, row: tuple[int, int, int, str, int]) -> None:
        if len(self.recent) < RECENT_RING_SIZE:
            self.recent.append(row)
        else:
            self.recent[self.recent_pos] = row
            self.recent_pos = (self.recent_pos + 1) % RECENT_RING_SIZE

    # -- rows ----------------------------------------------------------------------------

    def _good_fields(self, user_id: int, line_index: int) -> list[str]:
        """Fields of one good row (for the rare paths that then alter them)."""
        rng = self.rng
        first_index = int(rng.random() * len(FIRST_NAMES))
        last_index = int(rng.random() * len(LAST_NAMES))
        email = self._email(first_index, last_index)
        created = self._created_at(line_index)
        return [
            str(user_id),
            self.first_fields[first_index],
            self.last_fields[last_index],
            email,
            str(created),
            str(self._later_than(created)) if rng.random() < DELETED_RATE else "-1",
            "-1",
            "-1",
        ]

    def _duplicate_line(self, next_id: int) -> str:
        """A later line re-using a recent id, with a new email and maybe new state."""
        rng = self.rng
        user_id, first_index, last_index, old_email, created = self.recent[
            int(rng.random() * len(self.recent))
        ]
        if rng.random() < 0.2:  # e.g. a changed last name
            last_index = int(rng.random() * len(LAST_NAMES))
        email = self._email(first_index, last_index)
        if email.lower() == old_email.lower():
            email = "new." + email
        deleted = str(self._later_than(created)) if rng.random() < 0.4 else self._none()
        if rng.random() < 0.1:
            merged = str(self._later_than(created))
            parent = str(self._parent_id(user_id, next_id))
        else:
            merged, parent = self._none(), self._none()
        self._remember((user_id, first_index, last_index, email, created))
        self.stats["duplicate_id"] += 1
        return (
            f"{user_id},{self.first_fields[first_index]},{self.last_fields[last_index]},"
            f"{email},{created},{deleted},{merged},{parent}\n"
        )

    def _bad_line(self, kind: str, user_id: int, index: int, canonical: bool) -> str:
        """A bad row of ``kind``; ``canonical`` (forced examples) takes variant one."""
        rng = self.rng

        def pick(options: tuple[str, ...]) -> str:
            return options[0 if canonical else int(rng.random() * len(options))]

        fields = self._good_fields(user_id, index)
        if kind == "wrong_field_count":
            variant = pick(("too_few", "too_many", "unquoted_comma"))
            if variant == "too_few":
                fields.pop()  # 7 fields
            elif variant == "too_many":
                fields.append("extra")  # 9 fields
            else:
                fields[2] = "Smith, Jr."  # unquoted comma: 9 fields
        elif kind == "non_numeric_id":
            fields[0] = pick((*NON_NUMERIC_IDS, f"{user_id}x"))
        elif kind == "negative_id":
            fields[0] = f"-{user_id}"
        elif kind == "empty_created_at":
            fields[4] = ""
        elif kind == "non_integer_created_at":
            created = datetime.fromtimestamp(int(fields[4]) / 1000, tz=UTC)
            iso_format = pick(("%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%SZ"))
            fields[4] = created.strftime(iso_format)
        elif kind == "malformed_deleted_at":
            fields[5] = pick(MALFORMED_TIMESTAMPS)
        elif kind == "invalid_email":
            fields[3] = pick(INVALID_EMAILS)
        elif kind == "long_first_name":
            name = FIRST_NAMES[int(rng.random() * len(FIRST_NAMES))]
            length = 256 + int(rng.random() * 200)
            fields[1] = csv_field((name * (length // len(name) + 1))[:length])
        elif kind == "invalid_utf8":
            # Lone surrogates become raw bytes on write: b"\xff\xfe..." or Latin-1 "Jos\xe9".
            ascii_name = FIRST_NAMES[int(rng.random() * 100)]
            fields[1] = pick(("\udcff\udcfe" + ascii_name, "Jos\udce9"))
        else:
            raise ValueError(f"unknown bad kind: {kind}")
        self.stats[kind] += 1
        self.stats["bad_rows"] += 1
        return ",".join(fields) + "\n"

    @staticmethod
    def _padded(fields: list[str]) -> str:
        """Spaces around fields; quoted ones are left alone (the quote must come first)."""
        padded = [
            field if field.startswith('"') else f" {field} " + " " * (i % 2)
            for i, field in enumerate(fields)
        ]
        return ",".join(padded)

    def lines(self) -> Iterator[str]:
        """Yield the header then exactly ``rows`` data lines (plus blank lines)."""
        rng = self.rng
        random_ = rng.random
        forced = self.forced
        first_fields, last_fields = self.first_fields, self.last_fields
        n_first, n_last = len(FIRST_NAMES), len(LAST_NAMES)
        bad_fraction = self.bad_fraction
        stats = self.stats
        none = self._none
        yield HEADER + "\n"
        next_id = 1
        for line_index in range(self.rows):
            forced_kind = forced.get(line_index)
            if forced_kind == "blank_line" or random_() < BLANK_LINE_RATE:
                stats["blank_line"] += 1
                yield "\n"
                forced_kind = None if forced_kind == "blank_line" else forced_kind
            if random_() < ID_GAP_RATE:
                next_id += 1 + int(random_() * MAX_ID_GAP)
            user_id = next_id

            random_bad = forced_kind is None and random_() < bad_fraction
            if forced_kind in BAD_KINDS or random_bad:
                kind = forced_kind or BAD_KINDS[int(random_() * len(BAD_KINDS))]
                next_id += 1  # a bad row burns its id
                yield self._bad_line(kind, user_id, line_index, not random_bad)
                continue
            if self.recent and (
                forced_kind == "duplicate_id"
                or (forced_kind is None and random_() < DUPLICATE_ID_RATE)
            ):
                yield self._duplicate_line(next_id)
                continue

            next_id += 1
            first_index = int(random_() * n_first)
            last_index = int(random_() * n_last)
            if self.recent and random_() < REPEATED_EMAIL_RATE:
                email = self.recent[int(random_() * len(self.recent))][3]
                stats["repeated_email"] += 1
            else:
                email = self._email(first_index, last_index)
            created = self._created_at(line_index)
            if random_() < DELETED_RATE:
                deleted = str(self._later_than(created))
                stats["deleted"] += 1
            else:
                deleted = none()
            if random_() < MERGED_RATE:
                merged = str(self._later_than(created))
                parent = str(self._parent_id(user_id, next_id))
                stats["merged"] += 1
            else:
                merged, parent = none(), none()
            self._remember((user_id, first_index, last_index, email, created))
            if forced_kind == "padded_row" or random_() < PADDED_ROW_RATE:
                stats["padded_row"] += 1
                first, last = first_fields[first_index], last_fields[last_index]
                fields = [str(user_id), first, last, email, str(created)]
                fields += [deleted, merged, parent]
                yield self._padded(fields) + "\n"
                continue
            yield (
                f"{user_id},{first_fields[first_index]},{last_fields[last_index]},"
                f"{email},{created},{deleted},{merged},{parent}\n"
            )

    def write(self, out: BinaryIO) -> None:
        """Write the whole file to a binary stream in buffered chunks."""
        buffer: list[str] = []
        for line in self.lines():
            buffer.append(line)
            if len(buffer) >= FLUSH_EVERY:
                out.write("".join(buffer).encode("utf-8", "surrogateescape"))
                buffer.clear()
        out.write("".join(buffer).encode("utf-8", "surrogateescape"))
        out.flush()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Generate a realistic dirty users CSV (streaming, deterministic per seed)."
    )
    parser.add_argument("--rows", type=int, required=True, help="data lines to write")
    parser.add_argument("--seed", type=int, default=None, help="default: random")
    parser.add_argument(
        "--bad-fraction",
        type=float,
        default=DEFAULT_BAD_FRACTION,
        help=f"fraction of bad rows (default: {DEFAULT_BAD_FRACTION})",
    )
    parser.add_argument("--output", "-o", default=None, help="default: stdout")
    parser.add_argument(
        "--ensure-each-kind",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"force one example of each bad kind/oddity when rows >= {ENSURE_MIN_ROWS}",
    )
    parser.add_argument("--stats", action="store_true", help="counts by kind to stderr")
    args = parser.parse_args(argv)
    if args.rows < 0:
        parser.error("--rows must be >= 0")
    if not 0.0 <= args.bad_fraction <= 1.0:
        parser.error("--bad-fraction must be between 0 and 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    generator = UsersCsvGenerator(
        rows=args.rows,
        seed=args.seed,
        bad_fraction=args.bad_fraction,
        ensure_each_kind=args.ensure_each_kind,
    )
    if args.output:
        with open(args.output, "wb", buffering=1 << 20) as out:
            generator.write(out)
    else:
        generator.write(sys.stdout.buffer)
    if args.stats:
        for kind, count in sorted(generator.stats.items()):
            print(f"{kind}: {count}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
