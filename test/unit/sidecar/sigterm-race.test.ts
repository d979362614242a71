// The SIGTERM race on the real sidecar process, for both engines: clients connect while the
// sidecar receives SIGTERM (before, while and after it handles the signal; sigterm-race.ts), many
// rounds. A client whose connect succeeded is served, never reset: the listener closes only once
// the clients queued in its backlog are accepted (and, in the native engine, once the handshakes
// under way have completed). Clients that come after are refused. With a handoff address every
// client is served, by buildkitd or at the handoff address.
import { jest } from '@jest/globals';

import { tokenFile } from './helpers.ts';
import { sigtermRace } from './sigterm-race.ts';

jest.setTimeout(180_000);

const ROUNDS = 20;
const CLIENTS = 5;
const TOKEN = 'race-token';
const token = tokenFile(TOKEN);

describe.each(['native', 'js'])('%s engine', (engine) => {
  test(`${CLIENTS} clients connecting around SIGTERM, ${ROUNDS} times: none is reset`, async () => {
    const tally = await sigtermRace({ engine, rounds: ROUNDS, clients: CLIENTS });
    console.log(`${engine}: ${JSON.stringify(tally)}`);
    expect(tally).toMatchObject({
      reset: 0,
      'closed unserved': 0,
      timeout: 0,
      'handed off': 0,
      rounds: ROUNDS,
      badExits: 0,
    });
    expect(tally.served + tally.refused).toBe(ROUNDS * CLIENTS);
  });

  test(`with a handoff address: ${CLIENTS} clients around SIGTERM, ${ROUNDS} times: all served, none refused`, async () => {
    const tally = await sigtermRace({
      engine,
      rounds: ROUNDS,
      clients: CLIENTS,
      handoff: { tokenFile: token, token: TOKEN },
      args: ['--handoff-linger', '0.3'],
    });
    console.log(`${engine} with handoff: ${JSON.stringify(tally)}`);
    expect(tally).toMatchObject({
      refused: 0,
      reset: 0,
      'closed unserved': 0,
      timeout: 0,
      rounds: ROUNDS,
      badExits: 0,
    });
    expect(tally.served + tally['handed off']).toBe(ROUNDS * CLIENTS);
    // the clients that came once the sidecar was stopping went to the handoff address
    expect(tally['handed off']).toBeGreaterThan(0);
  });
});
