// Prints one plain closing line, `jest: N passed, N failed, N skipped`, so CI tooling that reads
// the last line of a run knows how many tests ran.
export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const line = `jest: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${results.numPendingTests + results.numTodoTests} skipped`;
    process.stderr.write(`\n${line}\n`);
  }
}
