"""The keyword names of magix.train / train_lora / generate / score / export are the commands' flag names
(as `magix COMMAND --help` lists them): a flag added to the CLI must reach Python too."""
import re

import pytest

import magix
from conftest import MAGIX_BIN, run

# Python keywords that are no flag: generate's progress bar (the CLI shows it on a terminal).
PYTHON_ONLY = {"generate": {"progress"}}
# Spellings the CLI accepts besides the flag's name (the reference's misspelling).
CLI_ALIASES = {"tempearature"}


@pytest.mark.parametrize("command", ["train", "train-lora", "generate", "score", "export"])
def test_keywords_are_the_flags(command):
    text = run([MAGIX_BIN, command, "--help"]).stdout
    cli = set(re.findall(r"--([a-z0-9_]+)(?=[\s,=])", text)) - {"help"} - CLI_ALIASES
    # revision: every command's --revision (hub names in the local HF cache); dataset_revision:
    # that of dataset hub names, on the commands that read data.
    name = command.replace("-", "_")
    python = set(getattr(magix._magix, f"{name}_flags")()) | {"revision"}
    if command != "export":
        python |= {"dataset_revision"}
    assert len(cli) >= 7
    assert python - PYTHON_ONLY.get(command, set()) == cli
