"""The experiment harness on top of the library: named presets (variants), `stv compare`,
`stv demo`, `stv bench`, and the lab models. Nothing in the library imports this package."""
