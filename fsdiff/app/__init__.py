"""The applications on top of the library: the ``fsdiff`` command (:mod:`~fsdiff.app.cli`), its demos
(:mod:`~fsdiff.app.demo`), sampling a run to files (:mod:`~fsdiff.app.generate`) and process set-up
(:mod:`~fsdiff.app.runtime`)."""
