"""The domain layer: what the platform does, apart from how it is asked.

One package or module per domain (sessions, prompts, ...). Its services take the backends
(:class:`services.context.Backends`) and who acts (:class:`schemas.db.MemberContext`), and refuse with
:mod:`services.errors`. ``api`` routes and ``workers`` actors call them; they import neither.
"""
