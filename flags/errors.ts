/** Bad command-line input or environment: printed without a stack trace, exit code 2. */
export class UsageError extends Error {}

/**
 * The command was used correctly but cannot start (the API server stays unreachable, ...):
 * printed without a stack trace, exit code 1.
 */
export class StartupError extends Error {}
