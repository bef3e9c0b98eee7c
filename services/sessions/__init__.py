"""The sessions domain, one module per job: ``start`` (quota, prompt, publish), ``lookup`` (what
an actor may see), ``input`` (everything written to a session's input stream), ``live`` (its host's
state in Redis), ``ending`` (stop) and ``lifecycle`` (the row's end, lost hosts)."""
