"""The ground floor every stage stands on; it knows nothing of datasets, faces or models.

errors      UserError: a problem with the user's input, printed as one line
fileio      atomic writes (Parquet, JSON, JSONL; `atomic_path` for any file, `atomic_folder`/`publish_folder`
            for a folder), output folders, leftover temporaries
locks       one writer per output folder (flock, released when the process dies): the one lock policy
memory      peak memory of this process
records     the values every stage shares: splits and text kinds
splits      deterministic hash splits by key
arrays      Arrow/numpy helpers (codes, duplicates, whitespace normalisation)
safe_pickle a restricted unpickler for plain-data pickles
"""
