#!/usr/bin/env python3
"""Checks the generation_config.json of `magix export` folders with transformers.

For each folder: GenerationConfig.from_pretrained(folder) must load it, and
 - when the file says "_from_model_config" (magix made it from config.json), it must equal what
   transformers itself makes of the folder's config (GenerationConfig.from_model_config) in
   to_diff_dict(), transformers_version aside (it names the version that wrote config.json);
 - with --source DIR (the model the checkpoint was trained from), it must equal DIR's file.

  /work/refenv/bin/python tools/reference/check_generation_config.py OUT [OUT2 ...] [--source DIR]

Run by hand (never by the tests). Exits 1 on a difference.
"""
import argparse
import sys

from transformers import AutoConfig, GenerationConfig


def diff_dict(g):
    d = g.to_diff_dict()
    d.pop("transformers_version", None)
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--source", help="the HF folder whose generation_config.json was copied")
    args = ap.parse_args()
    bad = 0
    for folder in args.folders:
        got = GenerationConfig.from_pretrained(folder)
        want = None
        if args.source:
            want = GenerationConfig.from_pretrained(args.source)
        elif got._from_model_config:
            want = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder))
        ok = want is None or diff_dict(got) == diff_dict(want)
        print(f"{folder}: {'ok' if ok else 'DIFFERS'}: {diff_dict(got)}")
        if not ok:
            print(f"  transformers: {diff_dict(want)}")
            bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
