export {
  CLOCK_SKEW_MS,
  DEFAULT_CA_VALIDITY_DAYS,
  DEFAULT_SERVING_VALIDITY_DAYS,
  SERIAL_BYTES,
  createCa,
  createServingCert,
  generateKeyPem,
  serviceDnsNames,
} from './generate.ts';
export type {
  CertKeyPair,
  CreateCaOptions,
  CreateServingCertOptions,
  GenerationSources,
} from './generate.ts';
export { describeCert, expiresWithin, keyMatchesCert, verifyChain } from './inspect.ts';
export type { CertDescription } from './inspect.ts';
export { CertificateError } from './parse.ts';
