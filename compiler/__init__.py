"""The compile side: tracing, graph IR, passes, memory planning, artefact writing."""
