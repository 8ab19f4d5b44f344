"""The paper's human study as a local web application: people see faces one at a time and say
whether each is a real photograph or generated, and the answers give the error rate, the fool
rate and the accuracy on real faces, beside the paper's figures.

    cyclemask-study serve --real DIR --generated DIR     # the study, on 127.0.0.1
    cyclemask-study report                                # figures, CSV files and a plot

Modules: `config` (options), `catalog` (input checks and the re-encoded images), `store`
(SQLite: participants, their image sequences, their answers), `stats` (rates, intervals,
tests against chance, CSV, plot), `app` (the Starlette application and the server), `cli`.
Nothing here imports torch.
"""
