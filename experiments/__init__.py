"""Research experiments behind the committed results: each module is run from the repository checkout
as ``python -m experiments.NAME`` and imports only the installed ``oodgen`` package; README.md says
what each one produced."""
