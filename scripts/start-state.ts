// What `npm start` leaves for `npm stop`: where it installed, so the stop undoes that and only that.
export const START_STATE_FILE = 'start.json';

export interface StartState {
  kubeconfig: string;
  /** an existing cluster (--kubeconfig): uninstall the release; otherwise stop the local cluster */
  external: boolean;
  release: string;
  namespace: string;
}
