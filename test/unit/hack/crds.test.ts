import { CRD_NAMES, establishedNames, installCrds } from '../../../hack/crds.ts';

test('establishedNames keeps only the CRDs whose Established condition is True', () => {
  const text = 'a.example=True\nb.example=\nc.example=False\n';
  expect([...establishedNames(text)]).toEqual(['a.example']);
});

test('installCrds keeps polling while the API server has not set any condition yet', async () => {
  const calls: string[][] = [];
  let gets = 0;
  await installCrds(async (args) => {
    calls.push(args);
    if (args[0] !== 'get') return '';
    gets++;
    // the first read is the race the old kubectl wait lost: no conditions at all
    return gets < 3 ? `${CRD_NAMES[0]}=\n${CRD_NAMES[1]}=\n` : CRD_NAMES.map((n) => `${n}=True`).join('\n');
  });
  expect(calls[0]?.slice(0, 2)).toEqual(['apply', '-f']);
  expect(gets).toBe(3);
});

test('installCrds names what it last saw when the CRDs never become Established', async () => {
  await expect(
    installCrds(async (args) => (args[0] === 'get' ? `${CRD_NAMES[0]}=True\n${CRD_NAMES[1]}=\n` : ''), 300),
  ).rejects.toThrow(
    /did not become Established within 0.3s \(last seen: .*buildkits.buildkit.seatgeek.io=\)/s,
  );
});
