"""`python -m mnistkit.backends.rehearse FILE`: load a model file with its kind's default backend and run batches
of zeros (1 and 3 images) in its native form, in this process, which may crash: the loading gate's rehearsal
(mnistkit.gate.rehearse) runs it in a child and refuses the file when the child dies by a signal. Exit 0 when the
file ran; 1 when it failed with an error, whose first line is printed after gate.REHEARSAL_ERROR (the parent refuses
the file with it: a runtime that fails on a file may crash on it another time, as MNN does on some)."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    import numpy as np

    from ..capture import captured_output
    from ..pixels import FLOAT_FORM
    from . import create_backend

    try:
        with captured_output(), create_backend(argv[0]) as backend:
            g, form = backend.info.geometry, backend.info.input_form
            tail = g.float_tail if form == FLOAT_FORM else g.pixel_tail
            for n in (1, 3):
                backend.run(np.zeros((n, *tail), np.float32 if form == FLOAT_FORM else np.uint8))
    except Exception as exc:
        from ..errors import first_line
        from ..gate import REHEARSAL_ERROR

        print(REHEARSAL_ERROR + first_line(exc, 300), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
