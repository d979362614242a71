// A pod that opted in but cannot be injected as asked. Thrown from deep inside the address parsing
// and the checks so they can stay plain functions; index.ts turns it into a 'refuse' decision.
export class Refusal extends Error {}

export const refuse = (message: string): never => {
  throw new Refusal(message);
};
