"""`zaya-edge serve`: an OpenAI-compatible HTTP server over one artifact (the `[serve]` extra).

    app         FastAPI routes, the API key, the scheduler's lifespan
    models      pydantic request bodies          prepare    body -> runtime Requests (a Plan)
    streaming   scheduler thread -> event loop   responses  OpenAI's chunks and bodies
    reasoning   <think>…</think> -> reasoning_content
    rsa         Markovian RSA per request         metrics    Prometheus text
    api_errors  every failure as an OpenAI error body
    server      build the app and run uvicorn

Continuous batching itself is the runtime's (zaya_edge.runtime.scheduler): this package never
runs the model, it submits jobs and streams what comes back. Nothing is imported here, so
`process` (a server in a child process) works without fastapi in the calling interpreter.
"""
