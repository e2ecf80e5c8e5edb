#!/usr/bin/env python3
"""Reads configs the way EasyRec itself does, as a reference for plec's
`--schema easyrec`: compiles an EasyRec checkout's own protos with protoc
(from grpcio-tools) and parses each config with protobuf's
`text_format.Merge` into `EasyRecConfig`, as
easy_rec/python/utils/config_util.py does. Prints one line per config that
protobuf rejects (with its error) and the totals.

    scripts/easyrec-protobuf-check.py EASYREC_CHECKOUT CONFIG...

Needs Python packages `protobuf` and `grpcio-tools`. Exit 1 when any
config is rejected.
"""

import importlib
import os
import shutil
import sys
import tempfile


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    checkout = os.path.abspath(sys.argv[1])
    configs = sys.argv[2:]
    try:
        from grpc_tools import protoc
        from google.protobuf import text_format
    except ImportError as e:
        raise SystemExit(f"needs protobuf and grpcio-tools ({e})")
    out = tempfile.mkdtemp(prefix="easyrec-pb-")
    proto_dir = os.path.join(checkout, "easy_rec", "python", "protos")
    protos = sorted(
        os.path.join("easy_rec", "python", "protos", n)
        for n in os.listdir(proto_dir)
        if n.endswith(".proto")
    )
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    cwd = os.getcwd()
    os.chdir(checkout)
    rc = protoc.main(["protoc", "-I.", f"-I{include}", f"--python_out={out}"] + protos)
    os.chdir(cwd)
    if rc != 0:
        raise SystemExit(f"protoc failed on {proto_dir}")
    for d in ("easy_rec", "easy_rec/python", "easy_rec/python/protos"):
        open(os.path.join(out, d, "__init__.py"), "a").close()
    sys.path.insert(0, out)
    pipeline = importlib.import_module("easy_rec.python.protos.pipeline_pb2")
    rejected = 0
    for path in configs:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        config = pipeline.EasyRecConfig()
        try:
            text_format.Merge(text, config)
        except text_format.ParseError as e:
            rejected += 1
            print(f"rejected: {path}: {e}")
    shutil.rmtree(out, ignore_errors=True)
    print(f"protobuf text_format.Merge: {len(configs)} configs, {rejected} rejected")
    sys.exit(1 if rejected else 0)


if __name__ == "__main__":
    main()
