"""Operations around a run: the central luigi scheduler, task states, warming up before workers fork.

Takes the command line's options; gives a running ``luigid`` (``scheduler``, open first), the states of
a calibration's tasks from it (``status``) and a warmed-up process (``warmup``). No luigi import: the
scheduler is a separate process, queried over its HTTP API.
"""
