"""Lamb carcass grading and halal slaughter traceability (issue 7).

Facts come from ``shared/reference/meat.md``; the grading schemes are TOML data files in
``fibergrade/standards/meat/``, each citing its source, read by :mod:`.schemes`.

- :mod:`.carcasses` reads and validates the carcass CSV (columnar, numpy).
- :mod:`.halal` reads halal slaughter records and validates them (stun limits, alive at cut,
  registrations, certificate valid on the slaughter date).
- :mod:`.grading` grades a day's carcasses at once (one numpy pass per scheme condition).
- :mod:`.traceability` stores batches and records in the store and follows the chain
  animal -> slaughter -> carcass -> lot -> certificate.
"""
