"""The benchmark behind `make bench` (python -m bench); see bench/main.py.

common      shared constants, BenchError, progress lines
settings    the BENCH_* environment knobs
processes   starting and stopping this run's processes (via tests.support.processes)
procfs      CPU seconds, RSS, children and machine facts from /proc
services    nginx, the tpot server and clients, the raw TCP service, as started processes
load        wrk and curl
scenarios/  http, tcp and memory measurements, alternating direct and tunnel
logscan     what the processes logged that looked wrong
report      summary, printed table, problems, JSON under bench/results/
targets/    nginx.conf template, wrk's report.lua, echo_service.py (the raw TCP service)
"""
