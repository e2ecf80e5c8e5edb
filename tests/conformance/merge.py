"""Reference oracle for plec's conformance test.

Compiles the project's own proto/ tree with grpcio-tools, then reads every
config named on stdin (one path per line) with protobuf's own
text_format.Merge into EasyRecConfig, and prints one JSON object per file:
{"file", "ok", "error", "hex"} where hex is SerializePartialToString with
deterministic map ordering.
"""
import importlib
import json
import os
import sys
import tempfile


def main():
    proto_root = sys.argv[1]
    from grpc_tools import protoc
    import grpc_tools

    out = tempfile.mkdtemp(prefix="plec-pyproto-")
    files = []
    for d, _, names in os.walk(proto_root):
        for n in names:
            if n.endswith(".proto"):
                files.append(os.path.relpath(os.path.join(d, n), proto_root))
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{proto_root}", f"-I{wkt}", f"--python_out={out}"] + sorted(files))
    if rc != 0:
        print(json.dumps({"fatal": f"protoc failed with {rc}"}))
        return 1
    sys.path.insert(0, out)
    from google.protobuf import text_format

    pipeline = importlib.import_module("tzrec.protos.pipeline_pb2")
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        with open(path, "rb") as f:
            raw = f.read()
        msg = pipeline.EasyRecConfig()
        try:
            text_format.Merge(raw.decode("utf-8"), msg)
            hexed = msg.SerializePartialToString(deterministic=True).hex()
            print(json.dumps({"file": path, "ok": True, "error": "", "hex": hexed}))
        except Exception as e:  # any parse failure is a rejection
            print(json.dumps({"file": path, "ok": False, "error": str(e), "hex": ""}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
