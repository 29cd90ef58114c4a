/** Which booking-end warnings to show or dismiss after a poll (no DOM, no JupyterLab). */
import { IWarning } from './api';

const STORAGE_KEY = 'werkhub-lab:seen-warnings';
const MAX_SEEN = 200;

/** Keys of warnings already shown in this browser, kept across page reloads. */
export class SeenStore {
  constructor(storage: Storage | null) {
    this._storage = storage;
    try {
      const raw = storage?.getItem(STORAGE_KEY);
      this._keys = raw ? (JSON.parse(raw) as string[]) : [];
    } catch {
      this._keys = [];
    }
  }

  has(key: string): boolean {
    return this._keys.includes(key);
  }

  add(key: string): void {
    if (this.has(key)) {
      return;
    }
    this._keys = [...this._keys, key].slice(-MAX_SEEN);
    try {
      this._storage?.setItem(STORAGE_KEY, JSON.stringify(this._keys));
    } catch {
      // storage full or disabled: remember for this page only
    }
  }

  private _storage: Storage | null;
  private _keys: string[];
}

export interface IPlan {
  show: IWarning[];
  dismiss: string[];
}

/**
 * Show current warnings not yet shown (in this page or before a reload); dismiss shown
 * ones that are no longer current (the booking was extended, ended or released).
 */
export function planWarnings(
  current: IWarning[],
  shown: string[],
  seen: SeenStore
): IPlan {
  const keys = new Set(current.map(w => w.key));
  return {
    show: current.filter(w => !shown.includes(w.key) && !seen.has(w.key)),
    dismiss: shown.filter(key => !keys.has(key))
  };
}
