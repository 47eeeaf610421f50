import { Migration } from '@mikro-orm/migrations';

export class Migration20261123193115_instance_remote_connection extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "instances" add column "remote_connection" jsonb null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "instances" drop column "remote_connection";`);
  }

}
