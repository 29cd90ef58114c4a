/** What the single-user server extension answers at `{base_url}werkhub/notifications`. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IWarning {
  /** booking id and end time (a reclaim's prefixed `reclaim:`): a new end time is a new warning */
  key: string;
  /**
   * `booking_ending`: the booking ends soon and may be extended; `reclaim`: another
   * organisation claims its guaranteed GPUs, so this borrowed booking ends early
   */
  kind: 'booking_ending' | 'reclaim';
  booking_id: number;
  notification_id: number;
  message: string;
  end: string;
  end_hhmm: string;
}

export interface IBooking {
  id: number;
  gpu_type: string;
  count: number;
  end: string;
  end_hhmm: string;
}

export interface IWerkhubState {
  poll_seconds: number;
  book_url: string;
  booking: IBooking | null;
  warnings: IWarning[];
}

export async function fetchState(): Promise<IWerkhubState> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'werkhub', 'notifications');
  const reply = await ServerConnection.makeRequest(url, {}, settings);
  if (!reply.ok) {
    throw new Error(`werkhub/notifications answered ${reply.status}`);
  }
  return (await reply.json()) as IWerkhubState;
}
