"""One module per dataset, named by its registry key (`converters.registry.DATASETS`).

A module holds its dataset's `Converter` subclass (`name` = the registry key, `Options` where it has
switches, `convert()`: the parsing of that dataset's files) and ends with `CONVERTER = ClassName`.
Nothing here is shared: what two datasets need lives in `converters.helpers`, and no dataset module
imports another.
"""
