"""A test job: copies every input file to outputs/ unchanged (so result hashes can be checked)."""

import json
import shutil
from pathlib import Path

outputs = Path("outputs")
outputs.mkdir(exist_ok=True)
for path in sorted(Path("inputs").iterdir()):
    shutil.copyfile(path, outputs / path.name)
print(json.dumps({"event": "progress", "progress": 0.5, "message": "copied"}), flush=True)
print(json.dumps({"event": "result"}), flush=True)
