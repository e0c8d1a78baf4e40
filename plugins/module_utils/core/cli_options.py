# Copyright: pgdr.backup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read a PostgreSQL tool's argument list the way its getopt_long does, to refuse options a module owns.

Checking only the text before '=' lets ``-Fp``, ``-vFp``, ``-j4``, ``-fFILE`` and abbreviations such
as ``--form=plain`` through. getopt_long (glibc, which PostgreSQL's tools use on Linux) reads:

* ``--name=value``, ``--name value`` (when the option takes an argument), and any unambiguous prefix of
  a long name (``--form`` is ``--format``); an exact name wins over longer names it prefixes;
* ``-x`` flags that cluster (``-vx``); a short option that takes an argument takes the rest of the word
  (``-Fp``, ``-vFp``) or, at the end of the word, the next one (``-F p``);
* ``--`` ends the options; every other word that does not start with ``-`` (and ``-`` itself) is an
  operand, wherever it stands (glibc permutes), e.g. pg_dump's database name.

The tables list the options of PostgreSQL 14 to 18 together: a prefix is resolved against all of them,
so a word that could mean an owned option in any of these versions is refused.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple


@dataclasses.dataclass(frozen=True)
class OptionTable:
    program: str
    short_with_argument: str  # letters that take an argument (getopt's "x:")
    short_flags: str  # letters without one
    long_options: Dict[str, bool]  # long name -> takes an argument
    short_names: Dict[str, str]  # letter -> its long name, for messages and ownership

    def long_name(self, letter):
        return self.short_names.get(letter, "-" + letter)


@dataclasses.dataclass(frozen=True)
class Item:
    """One thing getopt_long reads: an option (``name`` is its long name, or ``-x`` without one), an operand, or a problem."""

    kind: str  # option, operand, ambiguous, unknown
    written: str  # the option as the user wrote it, without its value: "-F", "--form"; the word for an operand
    index: int  # which item of the list (0-based) it starts in
    name: Optional[str] = None
    value: Optional[str] = None
    candidates: Tuple[str, ...] = ()


def _long(table, body, index, words, position):
    """(Item, words consumed) for ``--body``."""
    name, has_value, value = body.partition("=")
    written = "--" + name
    if name in table.long_options:
        matches = [name]
    else:
        matches = sorted(long for long in table.long_options if long.startswith(name))
    if not matches:
        return Item("unknown", written, index), 1
    if len(matches) > 1:
        return Item("ambiguous", written, index, candidates=tuple(matches)), 1
    (long,) = matches
    if not table.long_options[long]:
        return Item("option", written, index, name=long), 1
    if has_value:
        return Item("option", written, index, name=long, value=value), 1
    if position + 1 < len(words):
        return Item("option", written, index, name=long, value=words[position + 1]), 2
    return Item("option", written, index, name=long), 1  # the tool itself says the argument is missing


def _short(table, word, index, words, position):
    """([Item], words consumed) for a cluster ``-abc``."""
    items = []
    for offset in range(1, len(word)):
        letter = word[offset]
        written = "-" + letter
        if letter in table.short_with_argument:
            rest = word[offset + 1:]
            if rest:
                items.append(Item("option", written, index, name=table.long_name(letter), value=rest))
                return items, 1
            if position + 1 < len(words):
                items.append(Item("option", written, index, name=table.long_name(letter), value=words[position + 1]))
                return items, 2
            items.append(Item("option", written, index, name=table.long_name(letter)))
            return items, 1
        if letter in table.short_flags:
            items.append(Item("option", written, index, name=table.long_name(letter)))
        else:
            items.append(Item("unknown", written, index))
    return items, 1


def parse(table, words):
    """[Item] of ``words`` (a list of str) read as ``table.program`` reads its arguments."""
    items = []
    position = 0
    words = list(words or [])
    while position < len(words):
        word = words[position]
        if word == "--":
            items += [Item("operand", rest, position + 1 + n) for n, rest in enumerate(words[position + 1:])]
            break
        if word.startswith("--"):
            item, used = _long(table, word[2:], position, words, position)
            items.append(item)
        elif word.startswith("-") and word != "-":
            found, used = _short(table, word, position, words, position)
            items += found
        else:
            items.append(Item("operand", word, position))
            used = 1
        position += used
    return items


# pg_dump 14 to 18: getopt_long(argc, argv, "abBcCd:e:E:f:F:h:j:n:N:Op:RsS:t:T:U:vwWxXZ:", long_options, ...)
# (src/bin/pg_dump/pg_dump.c); -? and -V are read only as the first argument, before getopt.
PG_DUMP = OptionTable(
    program="pg_dump",
    short_with_argument="deEfFhjnNpStTUZ",
    short_flags="abBcCORsvwWxX",
    short_names={"a": "data-only", "b": "large-objects", "B": "no-large-objects", "c": "clean", "C": "create", "d": "dbname",
                 "e": "extension", "E": "encoding", "f": "file", "F": "format", "h": "host", "j": "jobs", "n": "schema",
                 "N": "exclude-schema", "O": "no-owner", "p": "port", "R": "no-reconnect", "s": "schema-only", "S": "superuser",
                 "t": "table", "T": "exclude-table", "U": "username", "v": "verbose", "w": "no-password", "W": "password",
                 "x": "no-privileges", "Z": "compress"},
    long_options={
        # with a short letter
        "data-only": False, "blobs": False, "large-objects": False, "no-blobs": False, "no-large-objects": False, "clean": False,
        "create": False, "dbname": True, "extension": True, "file": True, "format": True, "host": True, "jobs": True,
        "no-reconnect": False, "no-owner": False, "port": True, "schema": True, "exclude-schema": True, "schema-only": False,
        "superuser": True, "table": True, "exclude-table": True, "no-password": False, "password": False, "username": True,
        "verbose": False, "no-privileges": False, "no-acl": False, "compress": True, "encoding": True, "help": False, "version": False,
        # long only
        "attribute-inserts": False, "binary-upgrade": False, "column-inserts": False, "disable-dollar-quoting": False,
        "disable-triggers": False, "enable-row-security": False, "exclude-table-data": True, "extra-float-digits": True,
        "if-exists": False, "inserts": False, "lock-wait-timeout": True, "no-table-access-method": False, "no-tablespaces": False,
        "quote-all-identifiers": False, "load-via-partition-root": False, "role": True, "section": True,
        "serializable-deferrable": False, "snapshot": True, "strict-names": False, "use-set-session-authorization": False,
        "no-comments": False, "no-publications": False, "no-security-labels": False, "no-subscriptions": False,
        "no-synchronized-snapshots": False, "no-toast-compression": False, "no-unlogged-table-data": False, "no-sync": False,
        "on-conflict-do-nothing": False, "rows-per-insert": True, "include-foreign-data": True,
        # 16
        "table-and-children": True, "exclude-table-and-children": True, "exclude-table-data-and-children": True,
        # 17
        "sync-method": True, "filter": True, "exclude-extension": True,
        # 18 (and 17.6's --restrict-key)
        "statistics": False, "statistics-only": False, "no-statistics": False, "no-data": False, "no-schema": False,
        "no-policies": False, "sequence-data": False, "restrict-key": True,
    },
)
