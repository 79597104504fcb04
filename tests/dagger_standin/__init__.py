"""TEST STAND-IN for a Dagger engine. Never used outside the test suite and benchmarks.

No Dagger engine can be downloaded on the machines this project is developed on, so the
`DaggerEngine` is exercised, unmodified, against this stand-in: a small GraphQL HTTP server
that speaks the part of Dagger's API the dagger-io SDK needs for the engine's calls
(schema introspection, `container`/`from`/`withEnvVariable`/`withSecretVariable`/
`withMountedDirectory`/`withExec`/`stdout`/`stderr`/`exitCode`/`sync`/`directory`/`export`,
`host.directory`, `setSecret`), checks the session token (HTTP basic auth, token as user),
and runs real containers through a private Docker daemon (`--network none`).

Like Dagger, IDs encode a lazily evaluated pipeline; an exec runs when a field that needs its
result is requested, and its result is cached by the pipeline's digest (so a pipeline without a
cache-busting variable runs once). Mounted host directories are snapshots; after an exec the
mounted directories hold what the command wrote, and `export` copies them back to the host.

Limits (errors, not silent differences): one `withExec` per pipeline, `directory()` only
under a mount, no image pulls (images must exist in the private daemon), absolute host paths.

Modules: `model` (pipeline state and IDs), `containers` (runs containers with the docker CLI),
`resolvers` (the GraphQL schema and its resolvers), `http` (a minimal HTTP/1.1 server on trio),
`daemon` (starting a private dockerd and building busybox:latest), `launcher` (starting the
stand-in as a separate process), `__main__` (its command line).
"""
