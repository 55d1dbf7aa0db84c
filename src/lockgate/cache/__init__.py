"""The response cache of chat completions: exact matches and, where a route opts in, similar questions.

``keys`` turns a call into its exact key and its semantic scope; ``answers`` holds a complete answer
once, whether it arrived as a body or as a stream, and gives it back either way; ``store`` keeps answers
by key (in process, or in Redis); ``semantic`` is the in-process vector index and the embedders that
feed it. The gateway stage that uses them is ``gateway.stages.cache``; docs/caching.md says what a
caller sees.
"""
