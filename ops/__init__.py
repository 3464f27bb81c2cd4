"""Operations: how Flowdeck runs as processes.

The command lines of the web, worker and beat processes (`ops.processes`, which
`manage.py serve`, platform/Procfile and the live-stack tests all use), the web process's
entry point (`python -m ops.web`), and the embedded default's supervisor
(`manage.py serve`). Health and metrics belong here too.
"""
