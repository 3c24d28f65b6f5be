"""The dataset registry: every key of the suite, lookups, and the `mlproject datasets` table."""

from __future__ import annotations

import pytest

from mlproject.data.prepare import prepare_data
from mlproject.data.registry import REGISTRY, format_registry_table, get_spec
from mlproject.errors import ConfigError

ALL_KEYS = ["small", "large", "wikitext2", "tinystories", "openwebtext", "c4_en", "pile", "redpajama",
            "local_jsonl", "pydocs"]
STREAMED = {"openwebtext", "c4_en", "pile", "redpajama"}


def test_registry_lists_every_dataset_key():
    assert list(REGISTRY) == ALL_KEYS


def test_large_corpora_are_streamed_and_only_local_ones_work_offline():
    assert {k for k, s in REGISTRY.items() if s.streaming} == STREAMED
    assert {k for k, s in REGISTRY.items() if not s.needs_network} == {"local_jsonl", "pydocs"}


def test_every_spec_has_a_source_splits_and_a_usable_vocab_size():
    for spec in REGISTRY.values():
        assert spec.source and spec.splits[0] == "train" and spec.vocab_size >= 258
        assert spec.val_split is None or spec.val_split in spec.splits


def test_hub_specs_name_their_hub_sources():
    assert get_spec("small").source == "stas/openwebtext-10k"
    assert (get_spec("large").hub_name, get_spec("wikitext2").hub_name) == ("wikitext-103-raw-v1", "wikitext-2-raw-v1")
    assert get_spec("tinystories").source == "roneneldan/TinyStories"
    assert (get_spec("c4_en").source, get_spec("c4_en").hub_name) == ("allenai/c4", "en")
    assert get_spec("pile").source == "monology/pile-uncopyrighted"
    assert get_spec("redpajama").source == "togethercomputer/RedPajama-Data-1T-Sample"


def test_unknown_key_error_names_the_key_and_the_known_keys():
    with pytest.raises(ConfigError, match=r"unknown dataset 'wikitext3'.*pydocs") as err:
        get_spec("wikitext3")
    assert "\n" not in str(err.value)


def test_table_shows_every_key_and_which_token_caches_exist(small_pydocs, seeded_cache):
    before = format_registry_table(str(seeded_cache))
    assert all(key in before for key in ALL_KEYS)
    assert "yes (" not in before
    prepare_data(small_pydocs(), log=lambda _: None)
    after = {line.split()[0]: line for line in format_registry_table(str(seeded_cache)).splitlines()}
    assert "yes (1)" in after["pydocs"] and "yes (" not in after["wikitext2"]
