import { Migration } from '@mikro-orm/migrations';

export class Migration20261123194157_join_token_uses extends Migration {

  override async up(): Promise<void> {
    this.addSql(`alter table "join_tokens" add column "max_uses" int null, add column "use_count" int not null default 0;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table "join_tokens" drop column "max_uses", drop column "use_count";`);
  }

}
