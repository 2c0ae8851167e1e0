"""A fault campaign: the whole pair under a workload and a seeded nemesis, judged by checkers
that observe for themselves (Jepsen's nemesis and checker, Pacemaker CTS's audits).

    python -m tests.campaign --seed S --minutes M     (make campaign-short, make soak)

schedule.py draws the faults from the seed (pure); lab.py runs the pair (takeover, mirrord,
sshd, the service, fencing through ipmi_sim) and applies each fault; agents.py is the service
and the client; checks.py holds the checkers; run.py ties them together and prints the table and
the JSON line.
"""
