"""Where local files go ($MLPROJECT_LOCAL_DIR, else ./mlproject-outputs) and what an error line
tells a user to change when that place cannot be written."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlproject.errors import MlprojectError
from mlproject.outdir import LOCAL_DIR_ENV, check_writable, local_field, local_root


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_blank_variable_means_the_default_folder_under_the_working_directory(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(LOCAL_DIR_ENV, raising=False)
    else:
        monkeypatch.setenv(LOCAL_DIR_ENV, value)
    assert local_root() == Path("mlproject-outputs")
    assert local_root("original") == Path()
    assert local_field() == f"{LOCAL_DIR_ENV} (unset: under the working directory)"


def test_the_variable_moves_the_local_files_and_names_itself_in_errors(monkeypatch, tmp_path):
    monkeypatch.setenv(LOCAL_DIR_ENV, f" {tmp_path} ")
    assert local_root() == tmp_path and local_root("original") == tmp_path
    assert local_field() == LOCAL_DIR_ENV


def test_a_local_folder_that_is_a_file_is_refused_naming_what_to_change(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(LOCAL_DIR_ENV, raising=False)
    Path("mlproject-outputs").write_text("a user's file")
    with pytest.raises(MlprojectError) as err:
        check_writable(local_root() / "compare", local_field())
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{LOCAL_DIR_ENV} (unset: under the working directory)=")
    assert "is a file, not a folder" in line
    assert Path("mlproject-outputs").read_text() == "a user's file"
