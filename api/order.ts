// One ordering for every list the platform writes, so equal inputs give byte-identical objects.

/** Code-point order: the same on every machine, unlike localeCompare. */
export const byCodePoint = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);
