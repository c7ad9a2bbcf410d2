"""Oracle: TensorFlow's own TFRecord reader and writer (tf.io / tf.data) for cross-checks.

Input npz: ``blob`` uint8 + ``offsets`` (R+1,) = records to write with tf.io.TFRecordWriter to
the path in ``tf_out`` (str array); ``ours`` (str array) = a file written by our writer to read
back with tf.data.TFRecordDataset. Output npz: ``blob``/``offsets`` of the records TF read.
"""
import sys

import numpy as np
import tensorflow as tf


def main(inp, outp):
    z = np.load(inp)
    blob, offs = z["blob"].tobytes(), z["offsets"]
    with tf.io.TFRecordWriter(str(z["tf_out"])) as w:
        for i in range(len(offs) - 1):
            w.write(blob[offs[i]:offs[i + 1]])
    recs = [r.numpy() for r in tf.data.TFRecordDataset(str(z["ours"]))]
    np.savez(outp, blob=np.frombuffer(b"".join(recs), np.uint8) if recs else np.zeros(0, np.uint8),
             offsets=np.cumsum([0] + [len(r) for r in recs]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
