"""core.options.typed: module params become typed option objects in one place."""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import pytest

from ansible_collections.pgdr.backup.plugins.module_utils.core.options import typed


@dataclasses.dataclass(frozen=True)
class Inner:
    path: Optional[str]
    port: Optional[int]


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    inner: Optional[Inner]
    items: Optional[List[Inner]]
    plain: Optional[dict]


def test_nested_suboptions_become_option_objects():
    options = typed(Outer, dict(name="a", inner=dict(path="/x", port=5), items=[dict(path="/y")], plain=dict(k=1), extra=3))
    assert options == Outer(name="a", inner=Inner("/x", 5), items=[Inner("/y", None)], plain=dict(k=1))


def test_missing_keys_are_none_as_ansible_reports_unset_options():
    assert typed(Outer, dict(name="a")) == Outer(name="a", inner=None, items=None, plain=None)


def test_options_are_read_only():
    options = typed(Inner, dict(path="/x"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.path = "/y"


def test_an_explicit_null_takes_the_specs_default_at_every_depth():
    from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import null_means_default

    spec = dict(
        timeout=dict(type="int", default=120),
        name=dict(type="str"),
        repository=dict(type="dict", options=dict(port=dict(type="int", default=22), host=dict(type="str"))),
        targets=dict(type="list", elements="dict", options=dict(mode=dict(type="str", default="fast"))),
    )
    params = dict(timeout=None, name=None, repository=dict(port=None, host="h"), targets=[dict(mode=None), dict(mode="spread")])
    null_means_default(spec, params)
    assert params == dict(timeout=120, name=None, repository=dict(port=22, host="h"), targets=[dict(mode="fast"), dict(mode="spread")])


EMPTY_SPEC = dict(
    database=dict(type="str"),
    pg_bin_dir=dict(type="path"),
    port=dict(type="int"),
    databases=dict(type="list", elements="str"),
    extra_args=dict(type="list", elements="str", default=[]),
    repository=dict(type="dict", options=dict(path=dict(type="path"), prefix=dict(type="str", default=""))),
    targets=dict(type="list", elements="dict", options=dict(name=dict(type="str"))),
)


def test_empty_strings_and_lists_that_are_not_the_default_are_named_at_every_depth():
    from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import empty_options

    params = dict(database="", pg_bin_dir="", port=None, databases=["a", ""], extra_args=[],
                  repository=dict(path="", prefix=""), targets=[dict(name="x"), dict(name="")])
    assert empty_options(EMPTY_SPEC, params) == ["database", "pg_bin_dir", "databases[1]", "repository.path", "targets[1].name"]
    assert empty_options(EMPTY_SPEC, dict(databases=[])) == ["databases"]


def test_given_values_unset_options_and_empty_defaults_pass():
    from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import empty_options

    params = dict(database="db", pg_bin_dir=None, port=0, databases=None, extra_args=[],
                  repository=dict(path="/r", prefix=""), targets=None)
    assert empty_options(EMPTY_SPEC, params) == []


def test_the_empty_option_message_is_one_line_and_names_them():
    from ansible_collections.pgdr.backup.plugins.module_utils.core.module_runner import empty_message

    assert empty_message(["database"]) == (
        "option database is empty: give it a value, or leave it out (for a variable that may be empty: default(omit))")
    message = empty_message(["a", "b", "c", "d", "e", "f"])
    assert "\n" not in message and message.startswith("option a is empty (and 5 more: b, c, d, ...):")
