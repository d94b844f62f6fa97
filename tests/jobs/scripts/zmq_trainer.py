"""A stand-in for sleap-nn's structured channel: ``zmq_trainer.py PUBLISH_PORT CONTROLLER_PORT EPOCHS STEPS DELAY``.

Like sleap-nn it *connects* a PUB socket to the publish port and a SUB socket to the controller port on
127.0.0.1 and sends ``{"event": ..., "epoch": ..., "logs": ...}`` messages; ``{"command": "stop"}`` on the
controller stops it after the current batch with exit 0 and a result line saying so. Its stdout carries no
progress at all, so every progress event comes from the channel. It keeps sending while nobody is bound
(the worker that bound the ports may be dead and a new one not yet there): what it sends then is lost.
"""

import json
import sys
import time
from pathlib import Path

import zmq

publish, controller, epochs, steps, delay = sys.argv[1:6]
context = zmq.Context()
pub = context.socket(zmq.PUB)
pub.connect(f"tcp://127.0.0.1:{publish}")
sub = context.socket(zmq.SUB)
sub.subscribe("")
sub.connect(f"tcp://127.0.0.1:{controller}")


def send(event: str, epoch: int, **fields: object) -> None:
    pub.send_string(json.dumps({"event": event, "epoch": epoch, **fields}))


def stop_asked() -> bool:
    while sub.poll(0):
        if json.loads(sub.recv_string()).get("command") == "stop":
            return True
    return False


time.sleep(0.3)  # let the connections come up (sleap-nn imports torch first)
pub.send_string(json.dumps({"event": "train_begin"}))
stopped, batch_count = False, 0
for epoch in range(int(epochs)):
    send("epoch_begin", epoch)
    for batch in range(int(steps)):
        time.sleep(float(delay))
        batch_count += 1
        send("batch_end", epoch, batch=batch, logs={"loss": 1.0 / batch_count})
        print(f"batch {batch_count}", flush=True)
        if stop_asked():
            stopped = True
            break
    if stopped:
        break
    send("epoch_end", epoch, logs={"loss": 1.0 / batch_count, "val/loss": 2.0 / batch_count})
Path("outputs/model.txt").write_text("trained\n")
print(json.dumps({"event": "result", "model_file": "model.txt", "metrics": {"zmq_stop": float(stopped)}}))
sys.exit(0)
