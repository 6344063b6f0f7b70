"""The programs and configuration the benchmark measures against: nginx's configuration
template, wrk's report script, and the raw TCP source/sink/echo service."""
