"""What the dataset converters share; no module here knows a particular dataset, except `celeba_family`
(the lists the CelebA-family datasets share).

    base           the Converter interface and its bookkeeping: counts, rejects (one duplicate rule,
                   one column-checking loop), label maps, run() and the summary
    root           DatasetRoot: one dataset's folder, its listings (every one goes through it), the
                   unsafe-path rule
    tables         text tables and CSVs with exact line numbers; JSON
    matfiles       MATLAB .mat structs (v5 and v7.3)
    npyfiles       single-value .npy files
    captions       caption files (`<name>.txt`, one caption a line) and split lists
    celeba_family  CelebA's list_eval_partition and CelebAMask-HQ's CelebA-HQ -> CelebA mapping
    rows           column builders: key-value texts, boxes, ids, label maps, RECORD_SCHEMA tables
    colors         RGB -> nearest CSS3 colour name (css3_words.yaml)
    schema         RECORD_SCHEMA, the one definition of a converted record
    converted      the converted layout (NAME.parquet, .rejects.jsonl, .summary.json), written and read
"""
