// Which data path the sidecar runs. Both keep the same rules and counters (proxy.ts says which);
// the native one (native-proxy.ts) is the fast one, the JavaScript one needs nothing built.
import type { Logger } from 'pino';

import { UsageError } from '../flags/errors.ts';
import { createNativeProxy, loadNativeEngine } from './native-proxy.ts';
import type { Proxy, ProxyOptions } from './proxy.ts';
import { createProxy } from './proxy.ts';

export type EngineRequest = 'auto' | 'native' | 'js';
export type EngineName = 'native' | 'js';

export interface EngineChoice {
  engine: EngineName;
  /** why the native engine is not used when it was not asked away (auto fell back) */
  fallback?: string;
}

/** `nativeError` is why the native engine cannot load, undefined when it can. */
export function chooseEngine(request: EngineRequest, nativeError: string | undefined): EngineChoice {
  if (request === 'js') return { engine: 'js' };
  if (nativeError === undefined) return { engine: 'native' };
  if (request === 'native') throw new UsageError(`--engine native: ${nativeError}`);
  return { engine: 'js', fallback: nativeError };
}

function nativeLoadError(): string | undefined {
  try {
    loadNativeEngine();
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** The proxy for `request`, logging a fallback; throws UsageError when native is required and absent. */
export function createProxyEngine(
  request: EngineRequest,
  options: ProxyOptions,
  logger: Logger,
): { proxy: Proxy; engine: EngineName } {
  const choice = chooseEngine(request, request === 'js' ? undefined : nativeLoadError());
  if (choice.fallback !== undefined) {
    logger.warn({ reason: choice.fallback }, 'native data path unavailable: using the JavaScript one');
  }
  const proxy = choice.engine === 'native' ? createNativeProxy(options) : createProxy(options);
  return { proxy, engine: choice.engine };
}
