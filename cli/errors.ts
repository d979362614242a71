/** Bad command-line input or environment: printed without a stack trace, exit code 2. */
export class UsageError extends Error {}
