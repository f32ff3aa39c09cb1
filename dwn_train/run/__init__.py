"""The run lifecycle, in one home: everything about a run that is not training.

    folder.py     RunFolder: every path of a run folder, the one `holds_run()` rule, `clear()`
    lock.py       own(folder): one live run per folder (an OS lock a SIGKILL releases)
    resume.py     fresh or resumed: what a fresh run refuses, what a resume checks and loads
    command.py    the one Hydra override quoter, and the command that resumes a run
    interrupt.py  Ctrl-C stops between steps; the message that says where and how to go on
    precheck.py   the command line checked before Hydra runs (run folders, early lock, torchrun)
    sweep.py      which job folders belong to a sweep; a sweep into a folder holding runs

It is handed what it needs (paths, settings, the launch's words); it never reads Hydra's globals.
What the command line needs before Hydra runs (precheck, folder, sweep, command) loads no torch;
lock and resume load it when a run starts.
"""
