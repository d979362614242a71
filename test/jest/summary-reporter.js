// Prints one plain closing line, `jest: N passed, N failed, N skipped`, so CI tooling that reads
// the last line of a run knows how many tests ran. A test file that failed outside its tests (a
// hook that timed out, a file that does not compile) fails the run without failing a test, so
// such files are added to the line; otherwise it would read "0 failed" over a failed run.
export default class SummaryReporter {
  onRunComplete(_contexts, results) {
    const brokenFiles = results.testResults.filter(
      (file) => Boolean(file.testExecError) || (Boolean(file.failureMessage) && file.numFailingTests === 0),
    ).length;
    let line = `jest: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${results.numPendingTests + results.numTodoTests} skipped`;
    if (brokenFiles > 0) line += `, ${brokenFiles} test file(s) failed outside their tests`;
    // Skipped tests ran nothing: name them, so a tier that could not run is seen, not assumed.
    const skipped = results.testResults.flatMap((file) =>
      file.testResults.filter((t) => t.status === 'pending' || t.status === 'todo').map((t) => t.fullName),
    );
    const notRun = skipped.length
      ? `\nnot run (${skipped.length}):\n${skipped.map((n) => `  - ${n}`).join('\n')}`
      : '';
    process.stderr.write(`${notRun}\n${line}\n`);
  }
}
