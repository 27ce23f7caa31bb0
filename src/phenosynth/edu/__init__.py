"""Teaching with audited synthetic faces (issue 13): the web app, its statistics, practice and counselling sheets.

Layering: ``edu`` sits above ``audit`` (its decks take images only through the audit gate) and ``study``; only the
CLI (``phenosynth serve``) sits above it. Its web dependencies are the optional extra ``phenosynth[edu]``, imported
by the modules that need them, so ``import phenosynth.edu`` alone needs none of them.

- :mod:`phenosynth.edu.db`: SQLAlchemy 2 models, engines and the Alembic ``upgrade head`` run at start-up.
- :mod:`phenosynth.edu.security`: password hashing (pwdlib, argon2), CSRF tokens, the sign-in rate limit.
- :mod:`phenosynth.edu.accounts`: users (educator | trainee), the first educator.
- :mod:`phenosynth.edu.decks`: decks from a workspace's audited generator runs (the deck gate), zip export/import.
- :mod:`phenosynth.edu.scoring`: accuracy, sensitivity/specificity per condition, calibration, pre -> post change.
- :mod:`phenosynth.edu.practice`: adaptive perceptual-learning practice, FSRS scheduling, quiz assembly.
- :mod:`phenosynth.edu.sheet`: printable counselling sheets of audited synthetic faces.
- :mod:`phenosynth.edu.app`: the FastAPI app factory ``create_app(workspace, db_url=None, secret=None)``.
"""
